from vocabscale.cli import main

main()
