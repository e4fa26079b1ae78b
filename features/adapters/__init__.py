"""Adapters turn a known CRM export into the canonical tables; one module per source."""
