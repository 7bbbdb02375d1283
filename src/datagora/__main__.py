from datagora.cli import main

main()
