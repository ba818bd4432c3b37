"""twistd plugins for Bazar: one per role, plus the whole cluster.

Kept tiny on purpose: twistd imports every plugin file at start-up, so the real code is
named by module path here and imported only when its role is asked for.
"""

from twisted.application.service import ServiceMaker

bazarFrontend = ServiceMaker(
    "Bazar front end",
    "bazar.frontend.tap",
    "Bazar's public API, LRU cache and load balancer.",
    "bazar-frontend",
)
bazarCatalog = ServiceMaker(
    "Bazar catalog replica", "bazar.catalog.tap", "One catalog replica.", "bazar-catalog"
)
bazarOrder = ServiceMaker("Bazar order replica", "bazar.order.tap", "One order replica.", "bazar-order")
bazarCluster = ServiceMaker(
    "Bazar cluster",
    "bazar.cluster.tap",
    "1 front end + 3 catalog + 3 order replicas, supervised.",
    "bazar-cluster",
)
