from svc_funds import main

main.main()
