"""Example trials. They need scikit-learn, which the trial image installs; the SDK itself does not."""
