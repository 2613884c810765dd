"""Stage prepare-corpus: the source corpus read once, split and sharded (`prepare`), its
sources (`sources`) and the format of the directory it writes (`shards`)."""
