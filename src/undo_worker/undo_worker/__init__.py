"""UndoFunction: removes from AWS IoT what one import job made (its ledger says what)."""
