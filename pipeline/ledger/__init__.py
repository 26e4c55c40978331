"""The ledger: database and migrations, versions, test runs, pointers and their events."""
