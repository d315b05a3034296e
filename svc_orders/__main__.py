from svc_orders import main

main.main()
