/**
 * Every environment variable Çarşı reads, parsed and typed once (API.md "Configuration").
 * Services never read process.env: they get these values through their settings.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";

export const SERVICE_NAMES = ["api", "users", "products", "orders", "notifications"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];
/** The services that own a database, and so a `<SERVICE>_DATABASE_URL`. */
export const DATABASE_SERVICES = ["users", "products", "orders", "notifications"] as const;
export type DatabaseServiceName = (typeof DATABASE_SERVICES)[number];

export type Env = Record<string, string | undefined>;

export interface Config {
	nodeEnv: string;
	/** True when this process is a node of the distributed system (TRANSPORTER set). */
	distributed: boolean;
	namespace: string;
	nodeID?: string;
	services: ServiceName[];
	transporter?: string;
	/** Redis URL of the shared cache; unset with a per-process Memory cache or with the cache off. */
	cacher?: string;
	/** False with CACHER=off: every read goes to the database (the bench's uncached scenarios). */
	cacheEnabled: boolean;
	cacheTtlSeconds: number;
	dataDir: string;
	databaseUrls: Record<DatabaseServiceName, string>;
	port: number;
	metricsPort?: number;
	logLevel: string;
	/** LOG_FORMAT: `json` (pino, one object a line) or `pretty` (Moleculer's console lines). */
	logFormat: "json" | "pretty";
	tracing: TracingConfig;
	jwt: { secret: string; generated: boolean; expiresIn: string };
	admin: { email: string; password?: string; generated: boolean };
	cors: { origins: string[] | "*" };
	/** How many proxies in front of the gateway may set X-Forwarded-For (0: ignore the header). */
	trustProxy: number;
	/** How long a gateway answers a token users accepted without asking again (0: ask every time). */
	authCacheTtlMs: number;
	loginRateLimit: { windowMs: number; perIp: number; perEmail: number };
	requestTimeoutMs: number;
	/** How long stock stays held for an order that no commit confirms (then it is released). */
	reservationTtlMs: number;
	/** How often a products node looks for reservations past their time. */
	reservationSweepMs: number;
	/** How often the outbox relay looks for pending events that no hand-off holds. */
	outboxPollMs: number;
	/** How long after its commit an event is left to its writer's hand-off before any node's poll takes it. */
	outboxHandoffMs: number;
	/** The most PostgreSQL connections each service's pool opens (DB_POOL_MAX). */
	dbPoolMax: number;
	/** Test-only: the name of a point where this process kills itself (lib/faults.ts). */
	faultPoint?: string;
	/**
	 * Where notifications go out: with `url` (SMTP_URL, `smtp://` or `smtps://`, credentials in the
	 * URL) by email through nodemailer, sent from `from` (SMTP_FROM, default
	 * "Çarşı <no-reply@carsi.local>"); without it, to the log only.
	 */
	smtp: { url?: string; from: string };
	/** Durable business events (lib/channels): on the transporter's RabbitMQ, or in process. */
	/** amqpUrl: CHANNELS_URL, else TRANSPORTER when it is AMQP; unset keeps events in process. */
	channels: { amqpUrl?: string; maxRetries: number; retryDelayMs: number };
}

export const TRACING_EXPORTERS = ["none", "console", "zipkin"] as const;
export type TracingExporterName = (typeof TRACING_EXPORTERS)[number];

export interface TracingConfig {
	/** TRACING=off turns Moleculer's tracing off on this node (default on). */
	enabled: boolean;
	/** TRACING_EXPORTER: where spans go besides the gateway's collector (none, console, zipkin). */
	exporter: TracingExporterName;
	/** TRACING_ZIPKIN_URL: the Zipkin (or Jaeger's Zipkin-compatible) collector's base URL. */
	zipkinUrl: string;
	/**
	 * TRACING_SAMPLE: which new traces are recorded (a trace's later spans follow its root's
	 * decision): `{ rate }`, a share from 0 to 1, or `{ perSecond }`, at most that many a second.
	 */
	sample: { rate: number } | { perSecond: number };
	/** TRACES_KEPT: how many traces the gateway's collector keeps (oldest dropped first). */
	tracesKept: number;
}

export class ConfigError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "ConfigError";
		// One line in the runner's log, not a stack: the message says what to fix.
		this.stack = `${this.name}: ${message}`;
	}
}

function int(env: Env, name: string, fallback: number, min = 0): number {
	const raw = env[name];
	if (raw === undefined || raw === "") return fallback;
	const n = Number(raw);
	if (!Number.isInteger(n) || n < min) throw new ConfigError(`${name} must be an integer >= ${min}, got "${raw}"`);
	return n;
}

function fraction(env: Env, name: string, fallback: number): number {
	const raw = env[name];
	if (raw === undefined || raw === "") return fallback;
	const n = Number(raw);
	if (!Number.isFinite(n) || n < 0 || n > 1) throw new ConfigError(`${name} must be a number from 0 to 1, got "${raw}"`);
	return n;
}

/** A share (`0.1`) or a rate per second (`20/s`). */
function sampling(env: Env, name: string, fallback: TracingConfig["sample"]): TracingConfig["sample"] {
	const raw = (env[name] ?? "").trim();
	if (raw === "") return fallback;
	const perSecond = /^(\d+)\/s$/.exec(raw);
	if (perSecond && Number(perSecond[1]) > 0) return { perSecond: Number(perSecond[1]) };
	if (perSecond) throw new ConfigError(`${name} must be a share from 0 to 1 or "<n>/s" with n >= 1, got "${raw}"`);
	try {
		return { rate: fraction(env, name, 1) };
	} catch {
		throw new ConfigError(`${name} must be a share from 0 to 1 or "<n>/s" with n >= 1, got "${raw}"`);
	}
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
	const raw = (env[name] ?? "").trim().toLowerCase();
	if (raw === "") return fallback;
	if (!(allowed as readonly string[]).includes(raw)) throw new ConfigError(`${name} must be one of ${allowed.join(", ")}, got "${env[name]}"`);
	return raw as T;
}

function list(raw: string | undefined): string[] {
	return (raw ?? "")
		.split(",")
		.map(s => s.trim())
		.filter(Boolean);
}

export function parseServices(raw: string | undefined): ServiceName[] {
	const names = list(raw);
	if (names.length === 0) return [...SERVICE_NAMES];
	for (const name of names) {
		if (!(SERVICE_NAMES as readonly string[]).includes(name))
			throw new ConfigError(`SERVICES names an unknown service "${name}" (known: ${SERVICE_NAMES.join(", ")})`);
	}
	return names as ServiceName[];
}

export function loadConfig(env: Env = process.env): Config {
	const nodeEnv = env.NODE_ENV ?? "development";
	const transporter = env.TRANSPORTER || undefined;
	const distributed = transporter !== undefined;
	const dataDir = path.resolve(env.DATA_DIR || "./data");

	const databaseUrls = {} as Record<DatabaseServiceName, string>;
	for (const svc of DATABASE_SERVICES) {
		databaseUrls[svc] = env[`${svc.toUpperCase()}_DATABASE_URL`] || `sqlite:${path.join(dataDir, `${svc}.sqlite`)}`;
	}

	let jwtSecret = env.JWT_SECRET || "";
	let jwtGenerated = false;
	if (!jwtSecret) {
		if (distributed || nodeEnv === "production")
			throw new ConfigError(
				"JWT_SECRET is required when TRANSPORTER is set or NODE_ENV=production (the same secret on every node)",
			);
		jwtSecret = randomBytes(32).toString("base64url");
		jwtGenerated = true;
	}

	const channelsUrl = env.CHANNELS_URL || (transporter && /^amqps?:\/\//.test(transporter) ? transporter : undefined);
	if (transporter && !channelsUrl)
		throw new ConfigError(
			"CHANNELS_URL (an amqp:// URL) is required when TRANSPORTER is not AMQP: the business events stay on RabbitMQ",
		);

	const corsRaw = env.CORS_ORIGINS?.trim();
	const metricsPort = env.METRICS_PORT ? int(env, "METRICS_PORT", 0, 0) : undefined;

	const smtpUrl = env.SMTP_URL || undefined;
	if (smtpUrl && !/^smtps?:\/\/[^/]+/i.test(smtpUrl))
		throw new ConfigError(`SMTP_URL must be an smtp:// or smtps:// URL, got "${maskUrl(smtpUrl)}"`);

	return {
		nodeEnv,
		distributed,
		namespace: env.NAMESPACE || "carsi",
		nodeID: env.NODE_ID || undefined,
		services: parseServices(env.SERVICES),
		transporter,
		cacher: env.CACHER && env.CACHER !== "off" ? env.CACHER : undefined,
		cacheEnabled: env.CACHER !== "off",
		cacheTtlSeconds: int(env, "CACHE_TTL", 300, 1),
		dataDir,
		databaseUrls,
		port: int(env, "PORT", 3000, 0),
		metricsPort,
		logLevel: env.LOG_LEVEL || "info",
		logFormat: oneOf(env, "LOG_FORMAT", ["json", "pretty"] as const, nodeEnv === "production" ? "json" : "pretty"),
		tracing: {
			enabled: oneOf(env, "TRACING", ["on", "off"] as const, "on") === "on",
			exporter: oneOf(env, "TRACING_EXPORTER", TRACING_EXPORTERS, "none"),
			zipkinUrl: env.TRACING_ZIPKIN_URL || "http://127.0.0.1:9411",
			sample: sampling(env, "TRACING_SAMPLE", { perSecond: 20 }),
			tracesKept: int(env, "TRACES_KEPT", 500, 1),
		},
		jwt: { secret: jwtSecret, generated: jwtGenerated, expiresIn: env.JWT_EXPIRES_IN || "1h" },
		admin: {
			email: (env.ADMIN_EMAIL || "admin@carsi.local").toLowerCase(),
			password: env.ADMIN_PASSWORD || undefined,
			generated: !env.ADMIN_PASSWORD,
		},
		cors: { origins: !corsRaw || corsRaw === "*" ? "*" : list(corsRaw) },
		trustProxy: int(env, "TRUST_PROXY", 0, 0),
		authCacheTtlMs: int(env, "AUTH_CACHE_TTL", 30, 0) * 1000,
		loginRateLimit: {
			windowMs: int(env, "LOGIN_RATE_WINDOW_MS", 60_000, 1),
			perIp: int(env, "LOGIN_RATE_PER_IP", 20, 1),
			perEmail: int(env, "LOGIN_RATE_PER_EMAIL", 5, 1),
		},
		requestTimeoutMs: int(env, "REQUEST_TIMEOUT_MS", 10_000, 100),
		reservationTtlMs: int(env, "RESERVATION_TTL_MS", 300_000, 100),
		reservationSweepMs: int(env, "RESERVATION_SWEEP_MS", 5_000, 50),
		outboxPollMs: int(env, "OUTBOX_POLL_MS", 1_000, 10),
		outboxHandoffMs: int(env, "OUTBOX_HANDOFF_MS", 5_000, 100),
		dbPoolMax: int(env, "DB_POOL_MAX", 10, 1),
		faultPoint: env.CARSI_FAULT || undefined,
		smtp: { url: smtpUrl, from: env.SMTP_FROM || "Çarşı <no-reply@carsi.local>" },
		channels: {
			// The same RabbitMQ as the transporter (API.md "Events"); in process without one. CHANNELS_URL
			// names it when the transporter is not AMQP (NATS or Redis: the events stay on RabbitMQ).
			amqpUrl: channelsUrl,
			maxRetries: int(env, "CHANNEL_MAX_RETRIES", 5, 1),
			retryDelayMs: int(env, "CHANNEL_RETRY_DELAY_MS", 1_000, 1),
		},
	};
}

/** A database URL fit for a log line: the password replaced by ****. */
export function maskUrl(url: string): string {
	return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/i, "$1:****@");
}

let current: Config | undefined;
/** The configuration of this process, read from the environment on first use. */
export function getConfig(): Config {
	current ??= loadConfig();
	return current;
}

/** `npm run cluster` (lib/cluster.ts): one node per service on this machine's servers. */
export interface ClusterConfig {
	/** The services to run, one process each (SERVICES; default every service). */
	services: ServiceName[];
	transporter: string;
	cacher: string;
	/** A database URL per service that owns one: `<SERVICE>_DATABASE_URL`, or one derived from pgUrl and dbPrefix. */
	databaseUrls: Record<DatabaseServiceName, string>;
	/** The server's maintenance database (CLUSTER_PG_URL), where missing databases are created. */
	pgUrl: string;
	/** Databases are named `<dbPrefix>_<service>` (CLUSTER_DB_PREFIX). */
	dbPrefix: string;
	jwt: { secret: string; generated: boolean };
	port: number;
	/** How long a stop waits for the nodes before it kills them (CLUSTER_STOP_TIMEOUT_MS). */
	stopTimeoutMs: number;
}

export function loadClusterConfig(env: Env = process.env): ClusterConfig {
	const dbPrefix = env.CLUSTER_DB_PREFIX || "carsi";
	if (!/^[a-z_][a-z0-9_]*$/i.test(dbPrefix) || dbPrefix.length > 40)
		throw new ConfigError(`CLUSTER_DB_PREFIX must be letters, digits and _ (at most 40), got "${dbPrefix}"`);
	const pgUrl = env.CLUSTER_PG_URL || "postgres://postgres@127.0.0.1:5432/postgres";
	if (!/^postgres(ql)?:\/\//i.test(pgUrl)) throw new ConfigError(`CLUSTER_PG_URL must be a postgres:// URL, got "${maskUrl(pgUrl)}"`);
	const databaseUrls = {} as Record<DatabaseServiceName, string>;
	for (const svc of DATABASE_SERVICES) {
		const u = new URL(pgUrl);
		u.pathname = `/${dbPrefix}_${svc}`.toLowerCase();
		databaseUrls[svc] = env[`${svc.toUpperCase()}_DATABASE_URL`] || u.toString();
	}
	const secret = env.JWT_SECRET || "";
	return {
		services: parseServices(env.SERVICES),
		transporter: env.TRANSPORTER || "amqp://guest:guest@127.0.0.1:5672",
		cacher: env.CACHER || "redis://127.0.0.1:6379",
		databaseUrls,
		pgUrl,
		dbPrefix,
		jwt: secret ? { secret, generated: false } : { secret: randomBytes(32).toString("base64url"), generated: true },
		port: int(env, "PORT", 3000, 1),
		stopTimeoutMs: int(env, "CLUSTER_STOP_TIMEOUT_MS", 15_000, 100),
	};
}
