"""Agora's consistency checker: after any run, the invariants that hold across the services.

It reads every service through the gateway, as an admin (:mod:`consistency.snapshot`), and checks
one service's records against another's (:mod:`consistency.checks`): orders against inventory's
stock, orders against payments' captures, payments' ledger against itself and the orders, the
mailboxes against identity, orders and shipping, and (when the topology has shipping) shipments
against orders. ``agora verify`` (:mod:`consistency.command`) prints each violation and exits 0
only when there is none.
"""
