/**
 * api: the HTTP gateway (moleculer-web). Owns routing, authentication, authorization, the login
 * rate limit, error mapping and the operational endpoints. Owns no data and never answers a
 * client error with a 500 or an internal message.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import ApiGateway from "moleculer-web";
import type { Context, Service, ServiceSchema } from "moleculer";
import { getConfig } from "../../lib/config";
import { debugLogging } from "../../lib/logging";
import { lifecycle } from "../../lib/service";
import { ForbiddenError, TooManyRequestsError, UnauthorizedError, ValidationFailedError } from "../../lib/errors";
import { PrometheusReporter } from "../../lib/prometheus";
import { nodeReadiness } from "../../lib/readiness";
import { toHttpError } from "./http-errors";
import { buildOpenApi } from "./openapi";
import { MemoryWindowStore, RedisWindowStore, type WindowStore } from "./rate-limit";
import { ROUTES, ROUTE_BY_ACTION, ROUTED_SERVICES } from "./routes";
import { adminActions } from "./admin";
import { NotificationHub } from "./live";
import { assets, sendVendor } from "./static";
import { NOTIFICATION_STORED } from "../../lib/events";
import type { Notification } from "../notifications/model";
import { TracesMixin } from "./traces";
import packageJson from "../../package.json";
import { TokenCache } from "./token-cache";

export interface ApiSettings {
	port: number;
	ip: string;
	corsOrigins: string[] | "*";
	trustProxy: number;
	/** How long a token users accepted is answered from this node's memory (token-cache.ts); 0: never. */
	authCacheTtlMs: number;
	loginRateLimit: { windowMs: number; perIp: number; perEmail: number };
	/** Redis URL for the shared rate-limit counters; unset keeps them in this process. */
	rateLimitRedisUrl?: string;
	namespace: string;
	/** The notification streams: a heartbeat comment this often, and the reconnect delay given to clients. */
	notificationStream: { heartbeatMs: number; retryMs: number };
	[key: string]: unknown;
}

interface AuthUser {
	id: number;
	role: "customer" | "admin";
}
interface GatewayMeta {
	user?: AuthUser | null;
	$cache?: "HIT" | "MISS";
	/** CacheMeta.$jsonText: this route's action may answer JSON text. */
	$jsonText?: boolean;
	$statusCode?: number;
	$location?: string;
	$responseType?: string;
	$responseHeaders?: Record<string, string>;
	idempotencyKey?: string;
}

function requireJsonBody(req: IncomingMessage, _res: ServerResponse, next: (err?: unknown) => void): void {
	const hasBody = Number(req.headers["content-length"] ?? 0) > 0 || req.headers["transfer-encoding"] !== undefined;
	const type = String(req.headers["content-type"] ?? "").toLowerCase();
	if (hasBody && !/^application\/([a-z0-9.+-]+\+)?json\b/.test(type)) {
		next(Object.assign(new Error("The request body must be JSON"), { type: "content.not.json", status: 400 }));
		return;
	}
	next();
}

/** The path of the first string (value or key) holding a NUL character, or undefined. */
function nulField(value: unknown, path: string): string | undefined {
	if (typeof value === "string") return value.includes("\u0000") ? path : undefined;
	if (value === null || typeof value !== "object") return undefined;
	for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
		const at = Array.isArray(value) ? `${path}[${key}]` : path ? `${path}.${key}` : key;
		if (key.includes("\u0000")) return at;
		const found = nulField(v, at);
		if (found !== undefined) return found;
	}
	return undefined;
}

/** The Location of what a 201 created. */
function locationOf(action: string, data: unknown): string {
	if (action === "users.register") return "/api/users/me";
	const id = (data as { id?: unknown })?.id;
	return `/api/${action.split(".")[0]}/${id}`;
}
type Req = IncomingMessage & { $action?: { name: string; params?: Record<string, unknown> }; $ctx?: Context; body?: unknown };

interface ApiMethods {
	clientIp(req: IncomingMessage): string;
	checkLoginRate(req: Req): Promise<void>;
	readiness(): Promise<{ ok: boolean; checks: Record<string, string> }>;
	sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string | number>): void;
}
type ApiThis = Service<ApiSettings> & ApiMethods & { rateStore: WindowStore; version: string; hub: NotificationHub; tokens: TokenCache };

const config = getConfig();
const REQUEST_LOGS = debugLogging(config.logLevel) ? "debug" : null;

/**
 * Headers a JSON API sends on every answer: helmet 8's defaults, with the strictest CSP and framing
 * since nothing here is a page. HSTS is ignored by browsers over plain HTTP and protects the
 * clients of a TLS-terminating proxy in front of the gateway.
 */
export const SECURITY_HEADERS: Record<string, string> = {
	"X-Content-Type-Options": "nosniff",
	"X-Frame-Options": "DENY",
	"Referrer-Policy": "no-referrer",
	"Cross-Origin-Resource-Policy": "same-origin",
	"Cross-Origin-Opener-Policy": "same-origin",
	"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
	"Strict-Transport-Security": "max-age=31536000; includeSubDomains",
	"Origin-Agent-Cluster": "?1",
	"X-DNS-Prefetch-Control": "off",
	"X-Download-Options": "noopen",
	"X-Permitted-Cross-Domain-Policies": "none",
	"X-XSS-Protection": "0",
};
const SECURITY_HEADER_LIST = Object.entries(SECURITY_HEADERS);

/** What a client's X-Request-Id must look like to be kept (else the request gets a new id). */
const REQUEST_ID = /^[A-Za-z0-9._:-]{8,64}$/;

const ApiService: ServiceSchema<ApiSettings> = {
	name: "api",
	mixins: [ApiGateway, TracesMixin],

	settings: {
		port: config.port,
		ip: "0.0.0.0",
		namespace: config.namespace,
		corsOrigins: config.cors.origins,
		trustProxy: config.trustProxy,
		authCacheTtlMs: config.authCacheTtlMs,
		loginRateLimit: config.loginRateLimit,
		rateLimitRedisUrl: config.cacher,
		notificationStream: { heartbeatMs: 20_000, retryMs: 2_000 },

		// The storefront (/) and the operator console (/console): see static.ts.
		assets,
		tracesKept: config.tracing.tracesKept,

		// The root call of each request: an X-Request-Id from the client is kept as the requestID
		// (and so the traceId) only when it looks like one; probes, metrics scrapes, the console's
		// own reads (/api/admin/*, polled every few seconds) and the notification streams are not
		// traced (they would bury the traces worth reading).
		rootCallOptions(this: ApiThis, options: { requestID?: string; parentSpan?: unknown }, req: IncomingMessage) {
			if (options.requestID !== undefined && !REQUEST_ID.test(options.requestID)) options.requestID = undefined;
			const url = req.url ?? "";
			if (!url.startsWith("/api/") || url.startsWith("/api/admin/") || url.startsWith("/api/notifications/stream") || url.startsWith("/api/openapi.json"))
				options.parentSpan = { id: null, traceID: options.requestID ?? this.broker.generateUid(), sampled: false };
		},

		// Per-request logs cost 40% of the cached-read throughput at `info`: debug only. Off, not
		// "debug", below it: moleculer-web formats each line (kleur colours, the alias) before it
		// hands it to a logger that drops it. The routes' `logging` goes with them: with it on,
		// moleculer-web times and colours every response even when no line is written.
		logRequest: REQUEST_LOGS,
		logResponse: REQUEST_LOGS,
		logRequestParams: null,
		logResponseData: null,
		log4XXResponses: false,
		logRouteRegistration: "debug",

		use: [
			(_req: IncomingMessage, res: ServerResponse, next: () => void) => {
				for (const [k, v] of SECURITY_HEADER_LIST) res.setHeader(k, v);
				next();
			},
		],

		routes: [
			{
				name: "operations",
				path: "/",
				logging: REQUEST_LOGS !== null,
				mappingPolicy: "restrict",
				authentication: false,
				authorization: false,
				bodyParsers: { json: false, urlencoded: false },
				aliases: {
					"GET health"(this: ApiThis, _req: Req, res: ServerResponse) {
						this.sendJson(res, 200, { status: "ok" });
					},
					async "GET ready"(this: ApiThis, _req: Req, res: ServerResponse) {
						const { ok, checks } = await this.readiness();
						this.sendJson(res, ok ? 200 : 503, { checks });
					},
					"GET metrics"(this: ApiThis, _req: Req, res: ServerResponse) {
						const reporter = (this.broker.metrics as unknown as { reporter?: unknown[] }).reporter?.find(
							r => r instanceof PrometheusReporter,
						) as PrometheusReporter | undefined;
						res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" });
						res.end(reporter ? reporter.render() : "");
					},
					"GET vendor/preact-htm.js"(_req: Req, res: ServerResponse) {
						sendVendor(res);
					},
					"GET api/openapi.json"(this: ApiThis, _req: Req, res: ServerResponse) {
						const paramsOf = (action: string) =>
							(this.broker.registry.getActionList({ skipInternal: true }) as Array<{ name: string; action?: { params?: Record<string, unknown> } }>)
								.find(a => a.name === action)?.action?.params;
						this.sendJson(res, 200, buildOpenApi(ROUTES, paramsOf, this.version));
					},
				},
			},
			{
				name: "api",
				path: "/api",
				logging: REQUEST_LOGS !== null,
				mappingPolicy: "restrict",
				autoAliases: false,
				authentication: true,
				authorization: true,
				aliases: Object.fromEntries(ROUTES.map(r => [`${r.method} ${r.path}`, r.action])),
				// JSON objects and arrays only, at most 1 MB (413 above, 400 when malformed).
				bodyParsers: { json: { limit: "1mb", strict: true }, urlencoded: false },
				// The JSON parser skips bodies of other types, which would then read as missing fields:
				// a body that is not JSON is a 400, as API.md says.
				use: [requireJsonBody],
				callOptions: { timeout: config.requestTimeoutMs },

				// Not async, as authenticate and authorize: moleculer-web awaits each hook, and a read
				// needs none of them to wait for anything.
				onBeforeCall(this: ApiThis, ctx: Context<unknown, GatewayMeta>, _route: unknown, req: Req): Promise<void> | undefined {
					// No database stores a NUL in text (PostgreSQL refuses it, a 500 the fuzzer found):
					// refused here for every route, naming the field.
					const nul = nulField((req as { $params?: unknown }).$params, "");
					if (nul !== undefined) throw new ValidationFailedError([{ field: nul || "body", message: "Text must not contain a NUL character." }]);
					if (req.$action && ROUTE_BY_ACTION.get(req.$action.name)?.jsonText) ctx.meta.$jsonText = true;
					if (req.$action?.name === "orders.create") {
						const key = req.headers["idempotency-key"];
						if (key !== undefined) ctx.meta.idempotencyKey = Array.isArray(key) ? key.join(",") : key;
					}
					if (req.$action?.name === "users.login") return this.checkLoginRate(req);
					return undefined;
				},

				onAfterCall(this: ApiThis, ctx: Context<unknown, GatewayMeta>, _route: unknown, req: Req, res: ServerResponse, data: unknown) {
					const spec = req.$action ? ROUTE_BY_ACTION.get(req.$action.name) : undefined;
					// A service may answer another success status (a replayed order is 200, not 201).
					if (spec?.status && ctx.meta.$statusCode === undefined) ctx.meta.$statusCode = spec.status;
					if (ctx.meta.$statusCode === 201) ctx.meta.$location = locationOf(spec!.action, data);
					if (ctx.meta.$cache) res.setHeader("X-Cache", ctx.meta.$cache);
					return spec?.status === 204 ? null : data;
				},
			},
		],

		cors: {
			// moleculer-web matches a string origin as a substring ("http://a" would allow
			// "http://a.evil"): a function compares whole origins. Read at request time, so tests and
			// CORS_ORIGINS set it through settings.corsOrigins.
			origin(this: ApiThis, origin: string): boolean {
				const allowed = this.settings.corsOrigins;
				return allowed === "*" || allowed.includes(origin);
			},
			methods: ["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
			allowedHeaders: ["Content-Type", "Authorization", "Idempotency-Key", "X-Request-Id"],
			exposedHeaders: ["X-Cache", "Retry-After", "X-Request-Id"],
			credentials: false,
			maxAge: 600,
		},

		onError(this: ApiThis, req: Req, res: ServerResponse, err: Error) {
			const mapped = toHttpError(err);
			if (mapped.status >= 500) this.logger.error(`${req.method} ${req.url} failed:`, err);
			const headers: Record<string, string | number> = {};
			if (mapped.retryAfter) headers["Retry-After"] = mapped.retryAfter;
			this.sendJson(res, mapped.status, mapped.body, headers);
		},
	},

	actions: {
		// The broker's retry policy would run the whole HTTP handler again after a call inside it
		// failed, on a request whose body is already read: answer the failure instead (503).
		rest: { retryPolicy: { enabled: false } },

		...adminActions,

		/**
		 * GET /api/notifications/stream: the caller's new notifications as Server-Sent Events, from
		 * this node's hub. The readable is piped to the response; closing either ends the other.
		 */
		notificationStream: {
			params: { $$strict: true },
			handler(this: ApiThis, ctx: Context<unknown, GatewayMeta>) {
				const user = ctx.meta.user;
				if (!user) throw new UnauthorizedError();
				ctx.meta.$responseType = "text/event-stream; charset=utf-8";
				ctx.meta.$responseHeaders = { "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no" };
				return this.hub.open(user.id);
			},
		},
	},

	events: {
		/** A notification was stored: to its user's open streams on this node (live.ts). */
		[NOTIFICATION_STORED]: {
			handler(this: ApiThis, ctx: Context<Notification>) {
				this.hub.push(ctx.params.userId, "notification", ctx.params);
			},
		},
	},

	methods: {
		/**
		 * Bearer token → the user it names, through users.resolveToken (or this node's memory of its
		 * recent answers, token-cache.ts); no token → anonymous.
		 */
		authenticate(this: ApiThis, ctx: Context<unknown, GatewayMeta>, _route: unknown, req: Req): AuthUser | null | Promise<AuthUser | null> {
			const header = req.headers.authorization;
			if (!header) return null;
			const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
			if (!match) throw new UnauthorizedError("The Authorization header must be 'Bearer <token>'");
			const token = match[1];
			const known = this.tokens.get(token);
			if (known) return known;
			// A token resolveToken refuses to even look at (e.g. over 4096 characters) is as invalid
			// as a bad signature: 401, never a 422 about the internals' parameter.
			return ctx.call<AuthUser, { token: string }>("users.resolveToken", { token }).then(
				user => {
					this.tokens.set(token, user);
					return user;
				},
				(err: { code?: number }) => {
					if (err?.code === 422) throw new UnauthorizedError("Invalid or expired token");
					throw err;
				},
			);
		},

		/** The access rule of the route table: public, any user, or admins only. */
		authorize(this: ApiThis, ctx: Context<unknown, GatewayMeta>, _route: unknown, req: Req): void {
			const spec = req.$action ? ROUTE_BY_ACTION.get(req.$action.name) : undefined;
			const access = spec?.access ?? "admin";
			if (access === "public") return;
			if (!ctx.meta.user) throw new UnauthorizedError();
			if (access === "admin" && ctx.meta.user.role !== "admin") throw new ForbiddenError("Only an admin may do this");
		},

		clientIp(this: ApiThis, req: IncomingMessage): string {
			const socketIp = req.socket.remoteAddress ?? "unknown";
			const hops = this.settings.trustProxy;
			if (!hops) return socketIp;
			// Trust only the entries our own proxies appended: the n-th from the right.
			const chain = String(req.headers["x-forwarded-for"] ?? "")
				.split(",")
				.map(s => s.trim())
				.filter(Boolean);
			return chain[chain.length - hops] ?? chain[0] ?? socketIp;
		},

		async checkLoginRate(this: ApiThis, req: Req): Promise<void> {
			const { windowMs, perIp, perEmail } = this.settings.loginRateLimit;
			const body = (req.body ?? {}) as { email?: unknown };
			const email = typeof body.email === "string" ? body.email.trim().toLowerCase().slice(0, 254) : "";
			const hits = await Promise.all([
				this.rateStore.hit(`login:ip:${this.clientIp(req)}`, windowMs).then(h => ({ ...h, limit: perIp })),
				email ? this.rateStore.hit(`login:email:${email}`, windowMs).then(h => ({ ...h, limit: perEmail })) : null,
			]);
			const over = hits.filter(h => h && h.count > h.limit) as Array<{ resetMs: number }>;
			if (over.length > 0) throw new TooManyRequestsError(Math.ceil(Math.max(...over.map(h => h.resetMs)) / 1000));
		},

		/** What this node depends on (lib/readiness), and a node of every routed service. */
		readiness(this: ApiThis) {
			return nodeReadiness(this.broker, ROUTED_SERVICES);
		},

		sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | number> = {}): void {
			if (res.headersSent) return;
			// The security headers again: a body the parser refused (400, 413) fails before the
			// gateway-wide middleware that sets them has run.
			res.writeHead(status, { ...SECURITY_HEADERS, "Content-Type": "application/json; charset=utf-8", ...headers });
			res.end(JSON.stringify(body));
		},
	},

	created: lifecycle<ApiThis>(function () {
		this.version = packageJson.version;
		this.hub = new NotificationHub(this.settings.notificationStream);
		this.tokens = new TokenCache(this.settings.authCacheTtlMs);
		this.rateStore = this.settings.rateLimitRedisUrl
			? new RedisWindowStore(this.settings.rateLimitRedisUrl, `carsi-${this.settings.namespace}-ratelimit:`, this.logger)
			: new MemoryWindowStore();
	}),

	// Runs before moleculer-web's own stopped(), whose server.close() waits for open responses.
	stopped: lifecycle<ApiThis>(async function () {
		this.hub?.closeAll();
		await this.rateStore?.close();
	}),
};

export default ApiService;
