/**
 * The gateway's trace collector: keeps the spans every node broadcasts (`$tracing.spans`, see
 * lib/tracing) and answers the admin endpoints `GET /api/admin/traces` and
 * `GET /api/admin/traces/:traceId` (routes.ts).
 */
import type { Context, ServiceSchema } from "moleculer";
import { NotFoundError } from "../../lib/errors";
import { SPANS_EVENT, TraceStore, type CollectedSpan } from "../../lib/tracing";
import { lifecycle } from "../../lib/service";

interface TracesThis {
	settings: { tracesKept: number };
	traceStore: TraceStore;
}

export const TracesMixin: Partial<ServiceSchema> = {
	settings: { tracesKept: 500 },

	events: {
		// Not traced: lib/tracing turns event spans off (they would trace their own deliveries).
		[SPANS_EVENT]: {
			handler(this: TracesThis, ctx: Context<CollectedSpan[]>) {
				if (Array.isArray(ctx.params)) this.traceStore.add(ctx.params);
			},
		},
	},

	actions: {
		traces: {
			params: { limit: { type: "number", integer: true, min: 1, max: 500, convert: true, optional: true, default: 20 }, $$strict: true },
			handler(this: TracesThis, ctx: Context<{ limit: number }>) {
				return { items: this.traceStore.list(ctx.params.limit) };
			},
		},
		trace: {
			params: { traceId: { type: "string", min: 1, max: 128 }, $$strict: true },
			handler(this: TracesThis, ctx: Context<{ traceId: string }>) {
				const trace = this.traceStore.get(ctx.params.traceId);
				// Not echoed: a trace id is any client-chosen request id, and an answer repeats nothing unchecked.
				if (!trace) throw new NotFoundError("Trace");
				return trace;
			},
		},
	},

	created: lifecycle<TracesThis>(function () {
		this.traceStore = new TraceStore(this.settings.tracesKept);
	}),
};
