/**
 * The scope that carries a request's id from the handler that starts it to every promise job that
 * continues it, so that a log line written anywhere in between names the request (lib/logging).
 *
 * On Node 20, `AsyncLocalStorage` is built on async_hooks: once a scope has been entered, every
 * promise of the process gets an async id, a trigger id and the store (three properties), and
 * every promise job pushes and pops the async context, whether a request is in progress or not.
 * That was 17% of the CPU of a cached product read (`bench/ab.ts`, the scope replaced by a plain
 * call). This scope keeps only what the logs need: one V8 promise hook stamps a promise created
 * while a request is current with its id, and the hooks around each promise job make that id
 * current while the job runs (V8 calls them for `then` callbacks and for each `await`'s
 * continuation alike). What it does not follow is a callback that is not a promise job: a timer
 * or an I/O callback started by a request runs outside it, unless it is wrapped with `run` (as
 * LeanTimeout's warning is). On Node 24, whose AsyncLocalStorage keeps its store in V8's
 * continuation data (AsyncContextFrame) at no per-promise cost, and where V8's promise hooks are
 * missing, it is AsyncLocalStorage.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import v8 from "node:v8";

export interface RequestScope {
	/** The id of the request whose code is running, if any. */
	getStore(): string | undefined;
	/** Runs `fn` with `id` as the current request, and so every promise job it leads to. */
	run<A extends unknown[], R>(id: string, fn: (...args: A) => R, ...args: A): R;
}

interface PromiseHooks {
	onInit(hook: (promise: Promise<unknown>) => void): () => void;
	onBefore(hook: (promise: Promise<unknown>) => void): () => void;
	onAfter(hook: (promise: Promise<unknown>) => void): () => void;
}

const ID = Symbol("carsi.requestID");
type Stamped = Promise<unknown> & { [ID]?: string };

function promiseHookScope(hooks: PromiseHooks): RequestScope {
	let current: string | undefined;
	// The id each running promise job replaced, restored when it ends (jobs do not interleave).
	const replaced: Array<string | undefined> = [];
	hooks.onInit(promise => {
		if (current !== undefined) (promise as Stamped)[ID] = current;
	});
	hooks.onBefore(promise => {
		replaced.push(current);
		current = (promise as Stamped)[ID];
	});
	hooks.onAfter(() => {
		current = replaced.pop();
	});
	return {
		getStore: () => current,
		run(id, fn, ...args) {
			const outer = current;
			current = id;
			try {
				return fn(...args);
			} finally {
				current = outer;
			}
		},
	};
}

const SHARED = Symbol.for("carsi.requestScope");

function create(): RequestScope {
	const hooks = (v8 as unknown as { promiseHooks?: PromiseHooks }).promiseHooks;
	const major = Number(process.versions.node.split(".")[0]);
	// AsyncLocalStorage has this very interface (getStore, run).
	return hooks && major < 24 ? promiseHookScope(hooks) : new AsyncLocalStorage<string>();
}

/**
 * One scope, and one set of promise hooks, per process: kept on the `node:v8` module, which every
 * copy of this module shares (Jest loads project modules again for each test file; core modules once).
 */
const holder = v8 as unknown as Record<symbol, RequestScope | undefined>;
export const requestScope: RequestScope = (holder[SHARED] ??= create());
