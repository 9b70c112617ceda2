/// <reference lib="dom" />
// (The functions given to page.evaluate run in the browser.)
/**
 * A real browser for the browser suites: Debian's Chromium driven by playwright-core, headless,
 * with nothing that reaches the network on its own (the machine may be offline), and a fresh
 * profile per launch (Playwright gives each launch a new temporary user-data-dir). A missing Chromium fails the suite with the command that installs it:
 * browser tests never skip.
 */
import fs from "node:fs";
import path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Where screenshots go (gitignored); .ci/run prints it. */
export const ARTIFACTS = path.resolve(process.env.ARTIFACTS_DIR ?? path.join(__dirname, "..", "artifacts"));

export interface Browser {
	/**
	 * A context with its own storage (a fresh visitor); `auth` signs it in as the storefront would.
	 * `errors` collects the page's uncaught script errors, for the test to assert there were none.
	 */
	visitor(auth?: { token: string; user: unknown }): Promise<{ context: BrowserContext; page: Page; errors: Error[] }>;
	close(): Promise<void>;
}

export async function launchBrowser(): Promise<Browser> {
	if (!fs.existsSync(CHROMIUM))
		throw new Error(`No Chromium at ${CHROMIUM}: install it with 'apt-get install -y chromium' (or set CHROMIUM_PATH).`);
	const browser = await chromium.launch({
		executablePath: CHROMIUM,
		headless: true,
		args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
	});
	fs.mkdirSync(ARTIFACTS, { recursive: true });
	const contexts: BrowserContext[] = [];
	return {
		async visitor(auth) {
			const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
			contexts.push(context);
			if (auth) await context.addInitScript(value => localStorage.setItem("carsi.auth", value), JSON.stringify(auth));
			const page = await context.newPage();
			const errors: Error[] = [];
			page.on("pageerror", err => errors.push(err));
			return { context, page, errors };
		},
		async close() {
			for (const c of contexts) await c.close().catch(() => undefined);
			await browser.close();
		},
	};
}

export async function screenshot(page: Page, name: string): Promise<string> {
	const file = path.join(ARTIFACTS, `${name}.png`);
	await page.screenshot({ path: file, fullPage: true });
	return file;
}
