/**
 * Brokers for tests: the services of a node with their database URLs, cacher and transporter
 * given explicitly, and a temporary directory for SQLite files that is removed afterwards.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { ServiceBroker, type BrokerOptions, type ServiceSchema, type Cachers } from "moleculer";
import ApiService from "../../services/api/api.service";
import UsersService from "../../services/users/users.service";
import ProductsService from "../../services/products/products.service";
import OrdersService from "../../services/orders/orders.service";
import { buildChannelsMiddleware, type ChannelsOptions } from "../../lib/channels";
import { SERVERS } from "./servers";
import { SafeValidator } from "../../lib/validator";
import { SafeAmqpTransporter } from "../../lib/amqp-transporter";
import NotificationsService from "../../services/notifications/notifications.service";

export const SCHEMAS: Record<string, ServiceSchema> = {
	api: ApiService as unknown as ServiceSchema,
	users: UsersService as unknown as ServiceSchema,
	products: ProductsService as unknown as ServiceSchema,
	orders: OrdersService as unknown as ServiceSchema,
	notifications: NotificationsService as unknown as ServiceSchema,
};

export function uniqueId(prefix = "t"): string {
	return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`;
}

export function tempDir(): { dir: string; remove(): void } {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "carsi-test-"));
	return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export interface NodeOptions {
	services: string[];
	/** Database URL per service (SQLite file or PostgreSQL). */
	databaseUrls?: Record<string, string>;
	cacher?: BrokerOptions["cacher"] | Cachers.Base;
	transporter?: BrokerOptions["transporter"];
	namespace?: string;
	nodeID?: string;
	/** Extra settings per service. */
	settings?: Record<string, Record<string, unknown>>;
	broker?: Partial<BrokerOptions>;
	/**
	 * The durable-event middleware (lib/channels): on RabbitMQ when the node has a transporter,
	 * in process otherwise (its dead-letter table in a temporary directory removed at stop);
	 * fields given here override; `false` leaves it out.
	 */
	channels?: Partial<ChannelsOptions> | false;
	/** Middlewares after the channels one (e.g. @moleculer/channels' Tracing). */
	middlewares?: NonNullable<BrokerOptions["middlewares"]>;
}

function isAmqp(tx: NodeOptions["transporter"]): tx is { type: "AMQP"; options: Record<string, unknown> } {
	return typeof tx === "object" && tx !== null && (tx as { type?: unknown }).type === "AMQP";
}

export function createNode(opts: NodeOptions): ServiceBroker {
	const namespace = opts.namespace ?? uniqueId("ns");
	const middlewares: NonNullable<BrokerOptions["middlewares"]> = [];
	let channelsDir: ReturnType<typeof tempDir> | undefined;
	if (opts.channels !== false) {
		if (!opts.transporter && !opts.channels?.dataDir) channelsDir = tempDir();
		middlewares.push(
			buildChannelsMiddleware({
				amqpUrl: opts.transporter ? SERVERS.rabbitmq : undefined,
				namespace,
				maxRetries: 3,
				retryDelayMs: 50,
				dataDir: channelsDir?.dir ?? "",
				...(opts.channels || {}),
			}),
		);
	}
	middlewares.push(...(opts.middlewares ?? []));
	const broker = new ServiceBroker({
		logger: false,
		namespace,
		nodeID: opts.nodeID ?? uniqueId("node"),
		cacher: (opts.cacher ?? "Memory") as BrokerOptions["cacher"],
		// An AMQP transporter as the product builds it (lib/amqp-transporter).
		transporter: isAmqp(opts.transporter) ? new SafeAmqpTransporter(opts.transporter.options) : opts.transporter,
		requestTimeout: 10_000,
		metrics: { enabled: false },
		validator: new SafeValidator(),
		middlewares,
		stopped: () => channelsDir?.remove(),
		...opts.broker,
	});
	for (const name of opts.services) {
		const settings: Record<string, unknown> = { ...(opts.settings?.[name] ?? {}) };
		if (opts.databaseUrls?.[name]) settings.databaseUrl = opts.databaseUrls[name];
		if (name === "api") settings.port ??= 0;
		if (name !== "api") settings.dbConnectAttempts ??= 1;
		broker.createService({ name, mixins: [SCHEMAS[name]], settings });
	}
	return broker;
}

export function sqliteUrls(dir: string, services: string[]): Record<string, string> {
	return Object.fromEntries(services.map(s => [s, `sqlite:${path.join(dir, `${s}.sqlite`)}`]));
}

/** The base URL of the gateway running on this broker. */
export function gatewayUrl(broker: ServiceBroker): string {
	const api = broker.getLocalService("api") as unknown as { server: { address(): AddressInfo } };
	return `http://127.0.0.1:${api.server.address().port}`;
}
