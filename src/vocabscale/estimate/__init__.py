"""Stages estimate-<approach> (`stage`) and the user commands `vocabscale estimate` (`command`)
and `vocabscale predict` (`predict`): the three approaches (`approaches` registers
`isoflops`, `derivative` and `parametric`), their robust fitting (`fitting`), bootstrap
(`bootstrap`), the published coefficients (`published`) and synthetic runs tables from known
laws for tests and benchmarks (`synthetic`)."""
