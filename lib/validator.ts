/**
 * Moleculer's validator (fastest-validator) with one failure mended: its error messages are made
 * with String() of the refused value, and a value that cannot be made a string (an object whose own
 * `toString` is not a function, alone or inside an array) threw a TypeError out of the check: a 500
 * for `{"email": [{"toString": null}]}` (the fuzzer found it). Such a check runs again on a copy
 * without the unprintable keys, and the request is refused either way: with the errors of that
 * copy, or, when the copy would pass, naming the field that held the key.
 */
import { Validators } from "moleculer";

type Check = ((params: unknown, opts?: unknown) => true | ValidationEntry[] | Promise<true | ValidationEntry[]>) & { async?: boolean };
interface ValidationEntry {
	type: string;
	field: string;
	message: string;
	[key: string]: unknown;
}

/** Keys String() calls on an object; a non-function value there makes String() throw. */
const CONVERSION_KEYS = ["toString", "valueOf"];

/** A copy of `value` without the conversion keys that are not functions; `removed` gets their paths. */
function printable(value: unknown, path: string, removed: string[]): unknown {
	if (value === null || typeof value !== "object") return value;
	if (Array.isArray(value)) return value.map((v, i) => printable(v, `${path}[${i}]`, removed));
	const out: Record<string, unknown> = {};
	for (const key of Object.keys(value)) {
		const v = (value as Record<string, unknown>)[key];
		const at = path ? `${path}.${key}` : key;
		if (CONVERSION_KEYS.includes(key) && typeof v !== "function") removed.push(at);
		else out[key] = printable(v, at, removed);
	}
	return out;
}

export class SafeValidator extends Validators.Fastest {
	override compile(schema: Record<string, unknown>): Check {
		const check = super.compile(schema) as Check;
		const safe: Check = (params, opts) => {
			try {
				return check(params, opts);
			} catch (err) {
				if (!(err instanceof TypeError)) throw err;
				const removed: string[] = [];
				const copy = printable(params, "", removed);
				if (removed.length === 0) throw err;
				const refuse = (res: true | ValidationEntry[]) =>
					res === true ? removed.map(field => ({ type: "forbidden", field, message: `The '${field}' field is not allowed.` })) : res;
				const again = check(copy, opts);
				return again instanceof Promise ? again.then(refuse) : refuse(again);
			}
		};
		safe.async = check.async;
		return safe;
	}
}
