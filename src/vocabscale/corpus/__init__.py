"""Stage prepare-corpus (command `prepare`; work `split`, `duplicates`): the source corpus
read once (`sources`), deduplicated, split and sharded into the directory `shards` reads."""
