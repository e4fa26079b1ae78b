"""Scores back into the CRM: the upsert files, the field definitions an admin deploys, and the
optional push over the CRM's own bulk API (`oppscore export-scores`)."""
