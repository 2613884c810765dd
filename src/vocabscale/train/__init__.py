"""Stage train: one model x V run. The command (`stage`) trains here or under torchrun
(`launch`, `distributed`); the loop (`loop`) drives the model (`model`) over the data (`data`)
at the rates of `schedule`, fixed in advance by `plan`, with its step (`step`), evaluation
(`evaluate`), resume state (`checkpoint`, `checkpointer`, `sharded`) and outputs (`records`)."""
