/**
 * Four projects: unit (a broker per file on the embedded defaults), integration (real
 * PostgreSQL, Redis and RabbitMQ; they fail, never skip, when a server is missing), faults
 * (the same servers behind TCP proxies that are cut, and nodes killed with SIGKILL, under load)
 * and browser (the pages in Debian's Chromium through playwright-core; it fails when Chromium is
 * missing).
 */
const common = {
	preset: "ts-jest",
	testEnvironment: "node",
	transform: { "^.+\\.ts$": ["ts-jest", { tsconfig: "test/tsconfig.json" }] },
	setupFiles: ["<rootDir>/test/support/env.ts"],
};

module.exports = {
	testTimeout: 60000,
	projects: [
		{ ...common, displayName: "unit", testMatch: ["<rootDir>/test/unit/**/*.spec.ts"] },
		{ ...common, displayName: "integration", testMatch: ["<rootDir>/test/integration/**/*.spec.ts"], slowTestThreshold: 30 },
		{ ...common, displayName: "browser", testMatch: ["<rootDir>/test/browser/**/*.spec.ts"], slowTestThreshold: 30 },
		{ ...common, displayName: "faults", testMatch: ["<rootDir>/test/faults/**/*.spec.ts"], slowTestThreshold: 30 },
	],
};
