/**
 * The OpenAPI 3 document of the gateway, built from the route table (services/api/routes.ts) and
 * the params schemas the services declare, as the registry knows them: what is documented is what
 * is validated.
 */
import type { RouteSpec } from "./routes";

type Schema = Record<string, unknown>;
type ParamsSchema = Record<string, unknown> | undefined;

const error = (type: string): Schema => ({
	type: "object",
	required: ["name", "message", "code", "type"],
	properties: {
		name: { type: "string" },
		message: { type: "string" },
		code: { type: "integer" },
		type: { type: "string", example: type },
		data: {},
	},
});

const COMPONENTS: Record<string, Schema> = {
	User: {
		type: "object",
		required: ["id", "email", "name", "role", "createdAt"],
		properties: {
			id: { type: "integer", minimum: 1 },
			email: { type: "string", format: "email" },
			name: { type: "string" },
			role: { type: "string", enum: ["customer", "admin"] },
			createdAt: { type: "string", format: "date-time" },
		},
	},
	AuthResult: {
		type: "object",
		required: ["user", "token"],
		properties: { user: { $ref: "#/components/schemas/User" }, token: { type: "string", description: "JWT for Authorization: Bearer" } },
	},
	Product: {
		type: "object",
		required: ["id", "sku", "name", "description", "category", "priceCents", "currency", "stock", "createdAt", "updatedAt"],
		properties: {
			id: { type: "integer", minimum: 1 },
			sku: { type: "string" },
			name: { type: "string" },
			description: { type: "string" },
			category: { type: "string" },
			priceCents: { type: "integer", minimum: 0, description: "Price in minor units" },
			currency: { type: "string", pattern: "^[A-Z]{3}$", example: "TRY" },
			stock: { type: "integer", minimum: 0 },
			createdAt: { type: "string", format: "date-time" },
			updatedAt: { type: "string", format: "date-time" },
		},
	},
	ProductList: list("Product"),
	Order: {
		type: "object",
		required: ["id", "userId", "status", "items", "totalCents", "currency", "createdAt", "updatedAt"],
		properties: {
			id: { type: "string", format: "uuid" },
			userId: { type: "integer", minimum: 1 },
			status: { type: "string", enum: ["placed", "cancelled"] },
			items: {
				type: "array",
				items: {
					type: "object",
					required: ["productId", "sku", "name", "quantity", "unitPriceCents"],
					properties: {
						productId: { type: "integer", minimum: 1 },
						sku: { type: "string" },
						name: { type: "string" },
						quantity: { type: "integer", minimum: 1 },
						unitPriceCents: { type: "integer", minimum: 0, description: "From the catalog at reservation, never from the client" },
					},
				},
			},
			totalCents: { type: "integer", minimum: 0 },
			currency: { type: "string", pattern: "^[A-Z]{3}$" },
			createdAt: { type: "string", format: "date-time" },
			updatedAt: { type: "string", format: "date-time" },
		},
	},
	OrderList: list("Order"),
	Notification: {
		type: "object",
		required: ["id", "userId", "eventId", "type", "orderId", "channel", "subject", "body", "status", "createdAt", "sentAt"],
		properties: {
			id: { type: "string", format: "uuid" },
			userId: { type: "integer", minimum: 1 },
			eventId: { type: "string", format: "uuid", description: "The business event it was sent for; one notification per event" },
			type: { type: "string", enum: ["order.created", "order.cancelled", "user.registered"] },
			orderId: { type: "string", format: "uuid", nullable: true },
			channel: { type: "string", enum: ["log", "email"] },
			subject: { type: "string" },
			body: { type: "string" },
			status: { type: "string", enum: ["sent", "failed"] },
			createdAt: { type: "string", format: "date-time" },
			sentAt: { type: "string", format: "date-time", nullable: true, description: "null when not sent" },
		},
	},
	NotificationList: list("Notification"),
	TraceList: {
		type: "object",
		required: ["items"],
		properties: {
			items: {
				type: "array",
				items: {
					type: "object",
					required: ["traceId", "name", "startTime", "duration", "spans"],
					properties: {
						traceId: { type: "string", description: "Also the requestID and the X-Request-Id header of the request" },
						name: { type: "string", description: "The root span's name, e.g. \"POST /api/orders\"" },
						startTime: { type: "number", description: "Epoch milliseconds of the earliest span" },
						duration: { type: "number", description: "Milliseconds from the earliest span's start to the latest span's finish" },
						spans: { type: "integer", minimum: 1 },
					},
				},
			},
		},
	},
	Trace: {
		type: "object",
		required: ["traceId", "spans"],
		properties: {
			traceId: { type: "string" },
			spans: {
				type: "array",
				items: {
					type: "object",
					required: ["id", "parentId", "traceId", "name", "service", "nodeId", "startTime", "finishTime", "duration"],
					properties: {
						id: { type: "string" },
						parentId: { type: "string", nullable: true },
						traceId: { type: "string" },
						name: { type: "string" },
						service: { type: "string", nullable: true },
						nodeId: { type: "string" },
						startTime: { type: "number" },
						finishTime: { type: "number" },
						duration: { type: "number" },
						error: { type: "object", properties: { name: { type: "string" }, message: { type: "string" }, code: { type: "integer" }, type: { type: "string" } } },
					},
				},
			},
		},
	},
	Cluster: {
		type: "object",
		required: ["nodes"],
		properties: {
			nodes: {
				type: "array",
				items: {
					type: "object",
					required: ["id", "available", "local", "services"],
					properties: {
						id: { type: "string", description: "The Moleculer node ID" },
						available: { type: "boolean" },
						local: { type: "boolean", description: "The node that answered" },
						hostname: { type: "string", nullable: true },
						cpu: { type: "number", nullable: true },
						moleculer: { type: "string", nullable: true },
						services: { type: "array", items: { type: "string" } },
					},
				},
			},
		},
	},
	ClusterMetrics: {
		type: "object",
		required: ["collectedAt", "totals", "nodes"],
		properties: {
			collectedAt: { type: "string", format: "date-time" },
			totals: {
				type: "object",
				description: "Sums of the counters over the nodes; for gauges of a shared thing, the largest report per label set. null: no node reports the metric",
				properties: Object.fromEntries(
					[
						"ordersPlaced",
						"ordersRefused",
						"cacheHits",
						"cacheMisses",
						"cacheHitRatio",
						"outboxBacklog",
						"outboxOldestAgeSeconds",
						"dlqDepth",
						"notificationLagMeanSeconds",
					].map(k => [k, { type: "number", nullable: true }]),
				),
			},
			nodes: {
				type: "array",
				items: {
					type: "object",
					properties: { nodeID: { type: "string" }, metrics: { type: "array", items: { type: "object" } }, error: { type: "string" } },
				},
			},
		},
	},
	DeadLetterList: {
		type: "object",
		required: ["items"],
		properties: {
			items: {
				type: "array",
				items: {
					type: "object",
					properties: {
						messageId: { type: "string", nullable: true },
						group: { type: "string" },
						event: { type: "string" },
						attempts: { type: "integer", nullable: true },
						error: { type: "string", nullable: true },
						deadAt: { type: "string", format: "date-time", nullable: true },
						headers: { type: "object" },
						payload: {},
					},
				},
			},
		},
	},
	ReplayResult: {
		type: "object",
		required: ["replayed", "failed"],
		properties: {
			replayed: { type: "array", items: { type: "object", properties: { messageId: { type: "string" }, group: { type: "string" }, event: { type: "string" } } } },
			failed: {
				type: "array",
				items: { type: "object", properties: { messageId: { type: "string" }, group: { type: "string" }, event: { type: "string" }, error: { type: "string" } } },
			},
		},
	},
	Error: error("NOT_FOUND"),
	ValidationError: {
		...error("VALIDATION_ERROR"),
		properties: {
			...(error("VALIDATION_ERROR").properties as Schema),
			data: {
				type: "array",
				items: { type: "object", required: ["field", "message"], properties: { field: { type: "string" }, message: { type: "string" } } },
			},
		},
	},
};

function list(item: string): Schema {
	return {
		type: "object",
		required: ["rows", "total", "page", "pageSize", "totalPages"],
		properties: {
			rows: { type: "array", items: { $ref: `#/components/schemas/${item}` } },
			total: { type: "integer", minimum: 0 },
			page: { type: "integer", minimum: 1 },
			pageSize: { type: "integer", minimum: 1, maximum: 100 },
			totalPages: { type: "integer", minimum: 0 },
		},
	};
}

const ERROR_TEXT: Record<number, string> = {
	400: "The body is not JSON",
	401: "Missing, invalid or expired token (or wrong credentials at login)",
	403: "Authenticated but not allowed",
	404: "Unknown id or route",
	409: "Conflict; `type` names it",
	413: "Body over 1 MB",
	422: "Validation failed; `data` lists the fields",
	429: "Rate limited; see Retry-After",
	503: "A dependency is unavailable",
};

/** fastest-validator rule → JSON Schema, for the rules the services use. */
export function toJsonSchema(rule: unknown): Schema {
	if (typeof rule === "string") return toJsonSchema({ type: rule.split("|")[0] });
	const r = (rule ?? {}) as Record<string, unknown>;
	const out: Schema = {};
	switch (r.type) {
		case "number":
			out.type = r.integer ? "integer" : "number";
			if (r.min !== undefined) out.minimum = r.min;
			if (r.positive) out.minimum = 1;
			if (r.max !== undefined) out.maximum = r.max;
			break;
		case "string":
			out.type = "string";
			if (r.min !== undefined) out.minLength = r.min;
			if (r.max !== undefined) out.maxLength = r.max;
			if (r.pattern !== undefined) out.pattern = String(r.pattern).replace(/^\/(.*)\/[a-z]*$/, "$1");
			break;
		case "email":
			Object.assign(out, { type: "string", format: "email" });
			if (r.max !== undefined) out.maxLength = r.max;
			break;
		case "uuid":
			Object.assign(out, { type: "string", format: "uuid" });
			break;
		case "enum":
			Object.assign(out, { type: "string", enum: r.values });
			break;
		case "boolean":
			out.type = "boolean";
			break;
		case "array":
			out.type = "array";
			if (r.items) out.items = toJsonSchema(r.items);
			if (r.min !== undefined) out.minItems = r.min;
			if (r.max !== undefined) out.maxItems = r.max;
			break;
		case "object":
			Object.assign(out, objectSchema(r.props as ParamsSchema, r.strict === true));
			break;
		default:
			break;
	}
	if (r.default !== undefined) out.default = r.default;
	return out;
}

function objectSchema(params: ParamsSchema, strict: boolean): Schema {
	const properties: Schema = {};
	const required: string[] = [];
	for (const [name, rule] of Object.entries(params ?? {})) {
		if (name.startsWith("$$")) continue;
		properties[name] = toJsonSchema(rule);
		const r = rule as { optional?: boolean; default?: unknown };
		if (!r.optional && r.default === undefined) required.push(name);
	}
	const out: Schema = { type: "object", properties, additionalProperties: !strict };
	if (required.length) out.required = required;
	return out;
}

export function buildOpenApi(routes: RouteSpec[], paramsOf: (action: string) => ParamsSchema, version: string): Schema {
	const paths: Record<string, Record<string, unknown>> = {};
	for (const route of routes) {
		const openPath = "/api" + route.path.replace(/:([A-Za-z]+)/g, "{$1}");
		const pathParams = [...route.path.matchAll(/:([A-Za-z]+)/g)].map(m => m[1]);
		const params = paramsOf(route.action);
		const strict = params?.$$strict === true;
		const op: Record<string, unknown> = {
			tags: [route.tag],
			summary: route.summary,
			operationId: route.action.replace(".", "_"),
			parameters: pathParams.map(name => ({ name, in: "path", required: true, schema: toJsonSchema((params ?? {})[name] ?? "string") })),
		};
		const rest = Object.fromEntries(Object.entries(params ?? {}).filter(([k]) => !pathParams.includes(k) && !k.startsWith("$$")));
		if (route.paramsIn === "query") {
			(op.parameters as unknown[]).push(
				...Object.entries(rest).map(([name, rule]) => ({ name, in: "query", required: false, schema: toJsonSchema(rule) })),
			);
		} else if (route.paramsIn === "body") {
			op.requestBody = { required: true, content: { "application/json": { schema: objectSchema(rest, strict) } } };
		}
		if (route.action === "orders.create")
			(op.parameters as unknown[]).push({
				name: "Idempotency-Key",
				in: "header",
				required: false,
				description: "The same key and body answer the first order (200); another body is 409 IDEMPOTENCY_KEY_REUSED",
				schema: { type: "string", minLength: 1, maxLength: 200 },
			});
		if (route.access !== "public") op.security = [{ bearer: [] }];
		const okStatus = String(route.status ?? 200);
		const responses: Record<string, unknown> = {
			[okStatus]: route.response
				? { description: "OK", content: { "application/json": { schema: { $ref: `#/components/schemas/${route.response}` } } } }
				: route.produces
					? { description: "A stream", content: { [route.produces]: { schema: { type: "string" } } } }
					: { description: "No content" },
		};
		if (route.action === "orders.create")
			responses["200"] = { description: "The order first placed with this Idempotency-Key", content: { "application/json": { schema: { $ref: "#/components/schemas/Order" } } } };
		if (route.action === "products.get")
			(responses[okStatus] as Record<string, unknown>).headers = {
				"X-Cache": { description: "Whether the cache answered", schema: { type: "string", enum: ["HIT", "MISS"] } },
			};
		const statuses = new Set([...(route.errors ?? []), 422, 503]);
		if (route.paramsIn === "body") [400, 413].forEach(s => statuses.add(s));
		if (route.action === "users.login") statuses.add(429);
		for (const s of [...statuses].sort()) {
			const schema = s === 422 ? "ValidationError" : "Error";
			const resp: Record<string, unknown> = {
				description: ERROR_TEXT[s],
				content: { "application/json": { schema: { $ref: `#/components/schemas/${schema}` } } },
			};
			if (s === 429) resp.headers = { "Retry-After": { schema: { type: "integer" }, description: "Seconds to wait" } };
			responses[String(s)] = resp;
		}
		op.responses = responses;
		(paths[openPath] ??= {})[route.method.toLowerCase()] = op;
	}
	const plain = (description: string, schema: Schema = { type: "object" }) => ({
		get: { tags: ["operations"], summary: description, responses: { "200": { description: "OK", content: { "application/json": { schema } } } } },
	});
	paths["/health"] = plain("200 while the process lives");
	paths["/ready"] = {
		get: {
			tags: ["operations"],
			summary: "200 when every dependency of this node answers, 503 otherwise",
			responses: {
				"200": { description: "Ready", content: { "application/json": { schema: { type: "object", properties: { checks: { type: "object" } } } } } },
				"503": { description: "Not ready", content: { "application/json": { schema: { type: "object", properties: { checks: { type: "object" } } } } } },
			},
		},
	};
	paths["/metrics"] = {
		get: { tags: ["operations"], summary: "Prometheus metrics of this node", responses: { "200": { description: "Prometheus text", content: { "text/plain": { schema: { type: "string" } } } } } },
	};
	paths["/api/openapi.json"] = plain("This document");
	return {
		openapi: "3.0.3",
		info: {
			title: "Çarşı API",
			version,
			description: "The HTTP contract of Çarşı (API.md). Money is integer minor units; lists answer { rows, total, page, pageSize, totalPages }.",
		},
		servers: [{ url: "/" }],
		tags: [{ name: "users" }, { name: "products" }, { name: "orders" }, { name: "notifications" }, { name: "admin" }, { name: "operations" }],
		paths,
		components: {
			schemas: COMPONENTS,
			securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } },
		},
	};
}
