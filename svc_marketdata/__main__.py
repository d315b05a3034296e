from svc_marketdata import main

main.main()
