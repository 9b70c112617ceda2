/**
 * Çarşı's business metrics, in Moleculer's metric registry (so `$node.metrics` and the Prometheus
 * text of every node show them; the reporter writes dots as underscores: carsi_orders_placed).
 *
 *   carsi.orders.placed          counter                  orders committed
 *   carsi.orders.refused         counter  reason          orders refused (the error's type, e.g. INSUFFICIENT_STOCK)
 *   carsi.cache.hits / .misses   counter  action          cache-aside reads (mixins/cache.mixin.ts)
 *   carsi.outbox.backlog         gauge    service         outbox events not yet confirmed by RabbitMQ
 *   carsi.outbox.oldest.age      gauge    service         seconds since the oldest of them was written (0: none)
 *   carsi.dlq.depth              gauge    group           messages parked in a consumer group's dead-letter queue
 *   carsi.notifications.lag      histogram                seconds from an event's occurredAt to its stored notification
 *
 * Registered on first use, so a broker built without moleculer.config.ts (tests) counts too.
 */
import { METRIC, type ServiceBroker } from "moleculer";

export const METRICS = {
	ordersPlaced: "carsi.orders.placed",
	ordersRefused: "carsi.orders.refused",
	cacheHits: "carsi.cache.hits",
	cacheMisses: "carsi.cache.misses",
	outboxBacklog: "carsi.outbox.backlog",
	outboxOldestAge: "carsi.outbox.oldest.age",
	dlqDepth: "carsi.dlq.depth",
	notificationsLag: "carsi.notifications.lag",
} as const;

const DEFINITIONS = [
	{ type: METRIC.TYPE_COUNTER, name: METRICS.ordersPlaced, description: "Orders placed", unit: "order" },
	{ type: METRIC.TYPE_COUNTER, name: METRICS.ordersRefused, labelNames: ["reason"], description: "Orders refused, by reason", unit: "order" },
	{ type: METRIC.TYPE_COUNTER, name: METRICS.cacheHits, labelNames: ["action"], description: "Cache-aside hits", unit: "request" },
	{ type: METRIC.TYPE_COUNTER, name: METRICS.cacheMisses, labelNames: ["action"], description: "Cache-aside misses", unit: "request" },
	{ type: METRIC.TYPE_GAUGE, name: METRICS.outboxBacklog, labelNames: ["service"], description: "Outbox events not yet published", unit: "event" },
	{ type: METRIC.TYPE_GAUGE, name: METRICS.outboxOldestAge, labelNames: ["service"], description: "Age of the oldest unpublished outbox event", unit: "second" },
	{ type: METRIC.TYPE_GAUGE, name: METRICS.dlqDepth, labelNames: ["group"], description: "Messages in a consumer group's dead-letter queue", unit: "message" },
	{
		type: METRIC.TYPE_HISTOGRAM,
		name: METRICS.notificationsLag,
		description: "Seconds from a business event to its stored notification",
		unit: "second",
		buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
		// Also makes the reporter write _sum and _count (it writes them only with quantiles).
		quantiles: [0.5, 0.9, 0.99],
	},
];

const registered = new WeakSet<object>();

/** The broker's metric registry with the business metrics in it, or null when metrics are off. */
function registry(broker: ServiceBroker) {
	const metrics = broker.metrics;
	if (!broker.isMetricsEnabled()) return null;
	if (!registered.has(metrics)) {
		for (const def of DEFINITIONS) if (!metrics.getMetric(def.name)) metrics.register(def as never);
		registered.add(metrics);
	}
	return metrics;
}

export function countMetric(broker: ServiceBroker, name: string, labels?: Record<string, string>): void {
	registry(broker)?.increment(name, labels, 1);
}

export function setMetric(broker: ServiceBroker, name: string, value: number, labels?: Record<string, string>): void {
	registry(broker)?.set(name, value, labels);
}

export function observeMetric(broker: ServiceBroker, name: string, value: number, labels?: Record<string, string>): void {
	registry(broker)?.observe(name, value, labels);
}
