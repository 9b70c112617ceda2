/**
 * The gateway's routes: one table for the aliases, the access rules and the OpenAPI document,
 * so the three can never disagree. Listed one by one, never `**` (API.md).
 */
export type Access = "public" | "user" | "admin";

export interface RouteSpec {
	method: "GET" | "POST" | "PATCH" | "DELETE";
	/** Path below /api, in moleculer-web's `:param` form. */
	path: string;
	action: string;
	access: Access;
	/** Success status when it is not 200. */
	status?: 201 | 204;
	summary: string;
	tag: string;
	/** The OpenAPI schema name of the success body (components.schemas). */
	response?: string;
	/** Where the action's params come from, for the OpenAPI document. */
	paramsIn?: "query" | "body";
	/** Errors this route answers besides 400/413/422/429/503 that every route may give. */
	errors?: number[];
	/** The success body's media type when it is not JSON. */
	produces?: "text/event-stream";
	/** The action may answer JSON text, sent on as it is (a cache hit as Redis stores it: CacheMeta.$jsonText). */
	jsonText?: true;
}

export const ROUTES: RouteSpec[] = [
	{ method: "POST", path: "/users/register", action: "users.register", access: "public", status: 201, summary: "Register a customer", tag: "users", response: "AuthResult", paramsIn: "body", errors: [409] },
	{ method: "POST", path: "/users/login", action: "users.login", access: "public", summary: "Log in (rate limited per IP and per email)", tag: "users", response: "AuthResult", paramsIn: "body", errors: [401] },
	{ method: "GET", path: "/users/me", action: "users.me", access: "user", summary: "The caller's account", tag: "users", response: "User", errors: [401] },

	{ method: "GET", path: "/products", action: "products.list", access: "public", summary: "List and search the catalog", tag: "products", response: "ProductList", paramsIn: "query" },
	{ method: "GET", path: "/products/:id", action: "products.get", access: "public", summary: "One product (X-Cache: HIT | MISS)", tag: "products", response: "Product", errors: [404], jsonText: true },
	{ method: "POST", path: "/products", action: "products.create", access: "admin", status: 201, summary: "Create a product", tag: "products", response: "Product", paramsIn: "body", errors: [401, 403, 409] },
	{ method: "PATCH", path: "/products/:id", action: "products.update", access: "admin", summary: "Change a product; every cached copy is gone before the answer", tag: "products", response: "Product", paramsIn: "body", errors: [401, 403, 404, 409] },
	{ method: "DELETE", path: "/products/:id", action: "products.remove", access: "admin", status: 204, summary: "Delete a product", tag: "products", errors: [401, 403, 404] },

	{ method: "POST", path: "/orders", action: "orders.create", access: "user", status: 201, summary: "Place an order (optional Idempotency-Key header; the same key and body answer the first order with 200)", tag: "orders", response: "Order", paramsIn: "body", errors: [401, 404, 409] },
	{ method: "GET", path: "/orders", action: "orders.list", access: "user", summary: "The caller's orders, newest first (an admin sees all)", tag: "orders", response: "OrderList", paramsIn: "query", errors: [401] },
	{ method: "GET", path: "/orders/:id", action: "orders.get", access: "user", summary: "One order (owner or admin)", tag: "orders", response: "Order", errors: [401, 404] },
	{ method: "POST", path: "/orders/:id/cancel", action: "orders.cancel", access: "user", summary: "Cancel a placed order; its stock is released exactly once", tag: "orders", response: "Order", errors: [401, 404, 409] },

	{ method: "GET", path: "/admin/traces", action: "api.traces", access: "admin", summary: "The newest traces kept by this gateway (limit, default 20)", tag: "admin", response: "TraceList", paramsIn: "query", errors: [401, 403] },
	{ method: "GET", path: "/admin/traces/:traceId", action: "api.trace", access: "admin", summary: "One trace's spans, by start time", tag: "admin", response: "Trace", errors: [401, 403, 404] },

	{ method: "GET", path: "/notifications", action: "notifications.list", access: "user", summary: "The caller's notifications, newest first", tag: "notifications", response: "NotificationList", paramsIn: "query", errors: [401] },
	{ method: "GET", path: "/notifications/stream", action: "api.notificationStream", access: "user", summary: "The caller's new notifications as Server-Sent Events (`event: notification`, `data`: a Notification), while the connection lasts", tag: "notifications", produces: "text/event-stream", errors: [401] },

	{ method: "GET", path: "/admin/cluster", action: "api.adminCluster", access: "admin", summary: "The nodes of the cluster and the services each runs ($node.list)", tag: "admin", response: "Cluster", errors: [401, 403] },
	{ method: "GET", path: "/admin/metrics", action: "api.adminMetrics", access: "admin", summary: "The carsi.* metrics of every available node ($node.metrics), with totals (null: not reported)", tag: "admin", response: "ClusterMetrics", errors: [401, 403] },
	{ method: "GET", path: "/admin/dead-letters", action: "api.adminDeadLetters", access: "admin", summary: "Dead-lettered business events ($channels.dlqList)", tag: "admin", response: "DeadLetterList", paramsIn: "query", errors: [401, 403] },
	{ method: "POST", path: "/admin/dead-letters/replay", action: "api.adminReplayDeadLetter", access: "admin", summary: "Replay one dead letter into its group's queue ($channels.dlqReplay)", tag: "admin", response: "ReplayResult", paramsIn: "body", errors: [401, 403] },
];

export const ROUTE_BY_ACTION = new Map(ROUTES.map(r => [r.action, r]));

/** The services the gateway routes to: /ready needs a node of each. */
export const ROUTED_SERVICES = [...new Set(ROUTES.map(r => r.action.split(".")[0]))].filter(name => name !== "api");
