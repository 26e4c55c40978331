"""`envctl report`: a static HTML site of the ledger and the run artifacts, readable from file://."""
