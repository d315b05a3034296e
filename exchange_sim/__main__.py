from exchange_sim.main import main

main()
