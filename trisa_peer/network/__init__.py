"""The Travel Rule exchange (step 8): TRISANetwork service, handlers, transfers."""
