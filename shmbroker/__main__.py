from shmbroker.cli import main

main()
