"""The CRM round trip in one room: a CRM's export read into the canonical tables (Salesforce's
Data Export, HubSpot's deals export, the Maven sample; `*_import.py`), a newer Salesforce export
merged into one imported before (`salesforce_merge.py`), and the scores written back: the upsert
files, the field definitions an admin deploys, and the push over the CRM's own API
(`salesforce_upsert.py`, `hubspot_update.py`). It reads and writes the contract's tables and
the scores' files; it knows nothing of models (a sibling of `scoring` in the layers)."""
