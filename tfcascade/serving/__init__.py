"""SavedModel export with serving signatures, TF Serving configuration and a client."""
