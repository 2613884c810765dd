"""Stage report (`stage`): the inputs gathered as evidence (`evidence`), what to doubt
(`doubts`), the figures (`figures`) and the formats it is written in (`render`)."""
