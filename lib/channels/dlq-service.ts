/**
 * `$channels`: the dead-letter operations as actions, registered by the channels middleware on
 * every broker that has it, so the REPL can `call $channels.dlqList --group notifications` and
 * `call $channels.dlqReplay --messageId <id>` on either adapter. On the embedded default this is
 * the way to replay: only the running process has the handlers.
 * Never routed by the gateway (its routes are listed); callable across nodes like any internal action.
 */
import { Errors, type Context, type ServiceSchema } from "moleculer";
import type { DeadLetterOps, DeadLetterQuery, ReplayQuery } from "./types";

export function deadLetterService(adapter: DeadLetterOps): ServiceSchema {
	return {
		name: "$channels",
		actions: {
			dlqList: {
				visibility: "public",
				params: {
					group: { type: "string", optional: true },
					limit: { type: "number", integer: true, positive: true, optional: true, convert: true },
				},
				handler(ctx: Context<DeadLetterQuery>) {
					return adapter.listDeadLetters(ctx.params);
				},
			},
			dlqReplay: {
				visibility: "public",
				params: {
					messageId: { type: "string", optional: true },
					all: { type: "boolean", optional: true, convert: true },
					group: { type: "string", optional: true },
				},
				handler(ctx: Context<ReplayQuery>) {
					if (!ctx.params.messageId && !ctx.params.all)
						throw new Errors.MoleculerClientError("Give a messageId, or all: true", 422, "VALIDATION_ERROR");
					return adapter.replayDeadLetters(ctx.params);
				},
			},
		},
	};
}
