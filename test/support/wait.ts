/** Polling for a state the system reaches on its own (a reconnect, a discovery), with a bound. */
export function sleep(ms: number): Promise<void> {
	return new Promise(resolve => setTimeout(resolve, ms));
}

/** Resolves when `check` returns true; rejects naming `what` if it has not after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000, intervalMs = 50): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	let lastError: unknown;
	for (;;) {
		try {
			if (await check()) return;
			lastError = undefined;
		} catch (err) {
			lastError = err;
		}
		if (Date.now() > deadline) {
			const cause = lastError ? ` (last error: ${(lastError as Error).message})` : "";
			throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
		}
		await sleep(intervalMs);
	}
}
