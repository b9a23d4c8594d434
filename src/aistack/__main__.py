from aistack.cli import main

main()
