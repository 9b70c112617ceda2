/**
 * The broker, configured in one place from lib/config (API.md "Configuration").
 * Unset environment: the embedded default (no transporter, Memory cacher, SQLite per service).
 * TRANSPORTER/CACHER/<SERVICE>_DATABASE_URL set: one node of the distributed system.
 */
import os from "node:os";
import type { BrokerOptions, Errors, Middleware } from "moleculer";
import { getConfig } from "./lib/config";
import { buildCacher } from "./lib/cacher";
import { PrometheusReporter } from "./lib/prometheus";
import { buildChannelsMiddleware } from "./lib/channels";
import { Tracing as ChannelsTracing } from "@moleculer/channels";
import { loggerOptions, requestIdMiddleware } from "./lib/logging";
import { tracingOptions } from "./lib/tracing";
import { callMiddlewares } from "./lib/call-middlewares";
import { SafeValidator } from "./lib/validator";
import { SafeAmqpTransporter } from "./lib/amqp-transporter";

const config = getConfig();

/**
 * Reads: running one twice changes nothing, so one whose node was lost mid-request (rejected when
 * the heartbeat gives the node up) or timed out is retried on another node. A write is never
 * retried on a timeout: it may have run.
 */
const IDEMPOTENT_ACTIONS = new Set([
	"products.get",
	"products.list",
	"users.me",
	"users.resolveToken",
	"users.contact",
	"orders.get",
	"orders.list",
	"orders.placement",
	"notifications.list",
]);

// moleculer-runner overwrites every broker option from an environment variable named after its
// path, after loading this file: TRANSPORTER and CACHER would replace the tuned AMQP options and
// the cacher subclass below with stock ones built from the bare URLs, TRACING=off would become
// tracing: "off" (on, every call sampled, no exporter) and TRACING_EXPORTER=zipkin would replace
// the exporters (the gateway's trace collector among them) with a Zipkin one on its default URL.
// lib/config has read them, so the runner must not see them.
for (const name of ["TRANSPORTER", "CACHER", "TRACING", "TRACING_EXPORTER"]) delete process.env[name];

const brokerConfig: BrokerOptions = {
	namespace: config.namespace,
	nodeID: config.nodeID ?? `${os.hostname()}-${process.pid}`,

	// LOG_FORMAT=json: pino, one JSON object a line; pretty: console lines (lib/logging).
	logger: loggerOptions(config),

	// AMQP is the design's transporter, tuned below; any other URL (nats://, redis://) is handed to
	// Moleculer as it is (the bench compares them; the events then go to CHANNELS_URL).
	transporter: config.transporter && !/^amqps?:\/\//.test(config.transporter)
		? config.transporter
		: config.transporter
		? new SafeAmqpTransporter({
				url: config.transporter,
				// Moleculer's default prefetch of 1 lets one unacknowledged request block a node's
				// queue; measured here it capped a gateway+products pair at 18 req/s (2.2 s median).
				// 100 in flight keeps both cores busy while still bounding a slow node's backlog.
				prefetch: 100,
				// amqplib leaves Nagle's algorithm on: small request/response frames then wait for
				// delayed ACKs (~40 ms). Off, the same pair served about 2,300 req/s.
				socketOptions: { noDelay: true },
				// Queues of nodes that are gone expire after a minute instead of lingering.
				autoDeleteQueues: 60_000,
		  })
		: undefined,

	cacher: buildCacher(config),
	serializer: "JSON",

	requestTimeout: config.requestTimeoutMs,
	retryPolicy: {
		enabled: true,
		retries: 3,
		delay: 100,
		maxDelay: 1000,
		factor: 2,
		// Errors that prove the request never reached a handler are retried for every action; a lost
		// node or a timeout only for the reads above.
		check: (err: Errors.MoleculerRetryableError | Error) => {
			if (err.name === "ServiceNotAvailableError" || err.name === "ServiceNotFoundError") return true;
			if (err.name !== "RequestRejectedError" && err.name !== "RequestTimeoutError") return false;
			const action = (err as { data?: { action?: string } }).data?.action;
			return action !== undefined && IDEMPOTENT_ACTIONS.has(action);
		},
	},

	// A node killed without a goodbye is given up after 8 s (Moleculer's default is 30): its pending
	// requests are rejected then, and the reads among them retried on another node.
	heartbeatInterval: 2,
	heartbeatTimeout: 8,
	contextParamsCloning: false,
	tracking: { enabled: true, shutdownTimeout: 10_000 },
	disableBalancer: false,
	registry: { strategy: "RoundRobin", preferLocal: true },
	circuitBreaker: { enabled: false },
	bulkhead: { enabled: false },
	// fastest-validator, with a refused value that cannot be printed refused too (lib/validator).
	validator: new SafeValidator(),

	// Business events (order.*, user.registered) through @moleculer/channels: durable queues on the
	// same RabbitMQ, or the in-process adapter on the embedded default. See lib/channels.
	middlewares: [
		buildChannelsMiddleware({
			amqpUrl: config.channels.amqpUrl,
			namespace: config.namespace,
			maxRetries: config.channels.maxRetries,
			retryDelayMs: config.channels.retryDelayMs,
			dataDir: config.dataDir,
		}),
		// A span per consumed event, child of the span that published it (the outbox relay's).
		ChannelsTracing() as unknown as Middleware,
		// Every log line written while a request is handled carries its requestID.
		requestIdMiddleware(config.logLevel),
		// Moleculer's own per-call middlewares, with lighter tracing and metrics (lib/call-middlewares).
		...callMiddlewares(),
	],
	internalMiddlewares: false,

	metrics: {
		enabled: true,
		// A reporter instance is accepted by Moleculer (resolve() passes instances through).
		reporter: [new PrometheusReporter({ port: config.metricsPort ?? null }) as unknown as string],
	},
	// On unless TRACING=off; spans go to the gateway's collector and TRACING_EXPORTER (lib/tracing).
	tracing: tracingOptions(config.tracing),

	started(broker) {
		if (config.jwt.generated)
			broker.logger.warn("JWT_SECRET is not set: tokens are signed with a random secret of this process and end with it.");
	},
};

export = brokerConfig;
