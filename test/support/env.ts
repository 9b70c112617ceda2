/**
 * Runs before every test file: the configuration a test process starts from. Services read
 * lib/config at import, so this is the embedded default with a fixed JWT secret; tests pass
 * database URLs, cacher and transporter explicitly.
 */
process.env.JWT_SECRET ??= "test-secret-that-is-long-enough-for-hs256";
process.env.LOG_LEVEL ??= "warn";
delete process.env.TRANSPORTER;
delete process.env.CACHER;
