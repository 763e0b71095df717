"""The local stack that stands in for Azure when developing and testing without a subscription.

Nothing here is deployed: the Function App never imports `localrun`, so it may know things
production must not (the emulator's well-known account, process management, npm).
"""
