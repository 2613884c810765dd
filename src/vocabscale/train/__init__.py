"""Stage train: one model x V run (`loop`, entry point `stage`), with its model (`model`), data
(`data`), schedule (`schedule`), evaluation (`evaluate`), resume state (`checkpoint`) and
several processes under torchrun (`distributed`)."""
