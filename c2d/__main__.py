from c2d.cli import main

main()
