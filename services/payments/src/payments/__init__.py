"""Agora payments: payments, a simulated card processor and a double-entry ledger."""
