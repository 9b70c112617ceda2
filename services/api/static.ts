/**
 * The browser pages the gateway serves: the storefront at `/` and the operator console at
 * `/console`, plain ES modules from `public/` beside this file (the build copies the folder into
 * dist/, so `npm start` and the Docker image find it too), and the one library they import,
 * Preact + htm in a single ES module taken from the `htm` package, so nothing comes from a CDN.
 */
import fs from "node:fs";
import path from "node:path";
import type { ServerResponse } from "node:http";

export const PUBLIC_DIR = path.join(__dirname, "public");

/** Preact, its hooks and htm in one ES module without bare imports (no import map, no bundler). */
export const VENDOR_FILE = path.join(path.dirname(require.resolve("htm")), "..", "preact", "standalone.module.js");

/**
 * The pages' policy: scripts, styles and requests from this origin only, no inline script or
 * style, no frames. The JSON API keeps `default-src 'none'`.
 */
export const PAGE_CSP = [
	"default-src 'none'",
	"script-src 'self'",
	"style-src 'self'",
	"img-src 'self' data:",
	"connect-src 'self'",
	"form-action 'self'",
	"base-uri 'none'",
	"frame-ancestors 'none'",
].join("; ");

/** moleculer-web's `assets` setting (serve-static): `/` is index.html, `/console` is console.html. */
export const assets = {
	folder: PUBLIC_DIR,
	options: {
		index: "index.html",
		extensions: ["html"],
		// Small files that change with each release: revalidate (ETag) instead of guessing an age.
		cacheControl: true,
		maxAge: 0,
		setHeaders(res: ServerResponse) {
			res.setHeader("Content-Security-Policy", PAGE_CSP);
		},
	},
};

let vendor: Buffer | undefined;

/** GET /vendor/preact-htm.js */
export function sendVendor(res: ServerResponse): void {
	vendor ??= fs.readFileSync(VENDOR_FILE);
	res.writeHead(200, {
		"Content-Type": "text/javascript; charset=utf-8",
		"Content-Length": vendor.length,
		"Cache-Control": "public, max-age=86400",
	});
	res.end(vendor);
}
