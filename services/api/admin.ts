/**
 * What the operator console (/console) reads, as actions of the gateway behind admin-only routes
 * (routes.ts): the nodes of the cluster and their services, the carsi.* metrics of every node,
 * and the dead letters with their replay. The data comes from Moleculer's own `$node` service
 * and from `$channels` (lib/channels/dlq-service.ts); nothing here owns state.
 */
import { METRICS } from "../../lib/metrics";
import type { Context, Service, ServiceSchema } from "moleculer";
import type { DeadLetter, DeadLetterQuery, ReplayQuery, ReplayResult } from "../../lib/channels/types";

export interface ClusterNode {
	id: string;
	available: boolean;
	local: boolean;
	hostname: string | null;
	cpu: number | null;
	moleculer: string | null;
	services: string[];
}

interface RegistryNode {
	id: string;
	available: boolean;
	local: boolean;
	hostname?: string | null;
	cpu?: number | null;
	client?: { version?: string };
	services?: Array<{ name: string }>;
}

/** One value of a metric on one node, as `$node.metrics` lists it. */
interface MetricValue {
	labels: Record<string, string>;
	value?: number;
	count?: number;
	sum?: number;
}
interface MetricInfo {
	name: string;
	type: string;
	values: MetricValue[];
}

export interface MetricTotals {
	ordersPlaced: number | null;
	ordersRefused: number | null;
	cacheHits: number | null;
	cacheMisses: number | null;
	/** hits / (hits + misses), null before any read. */
	cacheHitRatio: number | null;
	outboxBacklog: number | null;
	outboxOldestAgeSeconds: number | null;
	dlqDepth: number | null;
	notificationLagMeanSeconds: number | null;
}


type PerNode = Array<{ nodeID: string; metrics: MetricInfo[] }>;

const labelKey = (labels: Record<string, string>) => JSON.stringify(Object.entries(labels ?? {}).sort());

function valuesOf(perNode: PerNode, name: string): MetricValue[][] | null {
	const found = perNode.map(n => n.metrics.find(m => m.name === name)?.values).filter((v): v is MetricValue[] => v !== undefined);
	return found.length ? found : null;
}

/** Counters add up across nodes (each counts its own work). */
function sumCounter(perNode: PerNode, name: string): number | null {
	const found = valuesOf(perNode, name);
	return found ? found.flat().reduce((n, v) => n + (v.value ?? 0), 0) : null;
}

/**
 * Gauges of a shared thing (an outbox table, a queue) may be reported by every node that looks at
 * it: the largest report per label set, then `combine` across label sets.
 */
function gauge(perNode: PerNode, name: string, combine: (values: number[]) => number): number | null {
	const found = valuesOf(perNode, name);
	if (!found) return null;
	const byLabels = new Map<string, number>();
	for (const v of found.flat()) byLabels.set(labelKey(v.labels), Math.max(byLabels.get(labelKey(v.labels)) ?? -Infinity, v.value ?? 0));
	return byLabels.size ? combine([...byLabels.values()]) : 0;
}

export function totals(perNode: PerNode): MetricTotals {
	const cacheHits = sumCounter(perNode, METRICS.cacheHits);
	const cacheMisses = sumCounter(perNode, METRICS.cacheMisses);
	const reads = (cacheHits ?? 0) + (cacheMisses ?? 0);
	const lag = valuesOf(perNode, METRICS.notificationsLag)?.flat() ?? [];
	const lagCount = lag.reduce((n, v) => n + (v.count ?? 0), 0);
	const lagSum = lag.reduce((n, v) => n + (v.sum ?? 0), 0);
	return {
		ordersPlaced: sumCounter(perNode, METRICS.ordersPlaced),
		ordersRefused: sumCounter(perNode, METRICS.ordersRefused),
		cacheHits,
		cacheMisses,
		cacheHitRatio: reads > 0 ? (cacheHits ?? 0) / reads : null,
		outboxBacklog: gauge(perNode, METRICS.outboxBacklog, v => v.reduce((a, b) => a + b, 0)),
		outboxOldestAgeSeconds: gauge(perNode, METRICS.outboxOldestAge, v => Math.max(0, ...v)),
		dlqDepth: gauge(perNode, METRICS.dlqDepth, v => v.reduce((a, b) => a + b, 0)),
		notificationLagMeanSeconds: lagCount > 0 ? lagSum / lagCount : null,
	};
}

const groupRule = { type: "string", min: 1, max: 100, pattern: /^[A-Za-z0-9._-]+$/, optional: true } as const;

/** A node that does not answer within this is reported without metrics rather than holding the page. */
const NODE_CALL_TIMEOUT_MS = 3000;

export const adminActions: ServiceSchema["actions"] = {
	/** GET /api/admin/cluster: every node the registry knows, with the services it runs. */
	adminCluster: {
		params: { $$strict: true },
		async handler(this: Service, ctx: Context): Promise<{ nodes: ClusterNode[] }> {
			const nodes = await ctx.call<RegistryNode[], { withServices: boolean }>("$node.list", { withServices: true });
			return {
				nodes: nodes
					.map(n => ({
						id: n.id,
						available: n.available,
						local: n.local,
						hostname: n.hostname ?? null,
						cpu: typeof n.cpu === "number" ? n.cpu : null,
						moleculer: n.client?.version ?? null,
						services: (n.services ?? []).map(s => s.name).sort(),
					}))
					.sort((a, b) => a.id.localeCompare(b.id)),
			};
		},
	},

	/** GET /api/admin/metrics: the carsi.* metrics of every available node, and their totals. */
	adminMetrics: {
		params: { $$strict: true },
		async handler(this: Service, ctx: Context) {
			const nodes = await ctx.call<RegistryNode[], { onlyAvailable: boolean }>("$node.list", { onlyAvailable: true });
			const answers = await Promise.all(
				nodes.map(async n => {
					try {
						const metrics = await ctx.call<MetricInfo[], { includes: string }>(
							"$node.metrics",
							{ includes: "carsi.**" },
							{ nodeID: n.id, timeout: NODE_CALL_TIMEOUT_MS, retries: 0 },
						);
						return { nodeID: n.id, metrics };
					} catch (err) {
						// A node with metrics switched off answers METRICS_DISABLED: it simply has none.
						return { nodeID: n.id, metrics: [] as MetricInfo[], error: (err as Error).message };
					}
				}),
			);
			return { collectedAt: new Date().toISOString(), totals: totals(answers), nodes: answers };
		},
	},

	/** GET /api/admin/dead-letters: what `$channels.dlqList` answers. */
	adminDeadLetters: {
		params: {
			group: groupRule,
			limit: { type: "number", integer: true, min: 1, max: 500, convert: true, default: 100 },
			$$strict: true,
		},
		async handler(this: Service, ctx: Context<DeadLetterQuery>): Promise<{ items: DeadLetter[] }> {
			const items = await ctx.call<DeadLetter[], DeadLetterQuery>("$channels.dlqList", ctx.params);
			return { items };
		},
	},

	/** POST /api/admin/dead-letters/replay: `$channels.dlqReplay` of one message. */
	adminReplayDeadLetter: {
		params: {
			messageId: { type: "string", min: 1, max: 200 },
			group: groupRule,
			$$strict: true,
		},
		handler(this: Service, ctx: Context<ReplayQuery>): Promise<ReplayResult> {
			return ctx.call<ReplayResult, ReplayQuery>("$channels.dlqReplay", { messageId: ctx.params.messageId, group: ctx.params.group });
		},
	},
};
