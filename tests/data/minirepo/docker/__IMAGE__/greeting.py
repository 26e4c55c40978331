print(open("/opt/greeting.txt").read().strip())
