"""Background consistency: replicators, auditors, updater and expirer."""
