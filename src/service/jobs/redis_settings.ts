/**
 * Where the shared (Redis) job store is and how to log in to it, read from a `--store` flag and
 * the environment. A password never comes from a flag (it would show in `ps`): it comes from
 * QLORAD_STORE_PASSWORD, QLORAD_STORE_PASSWORD_FILE, or a whole URL in QLORAD_STORE_URL (an
 * environment variable, not a command line). `rediss://` turns on TLS; QLORAD_STORE_CA_FILE
 * trusts a private CA for it. See docs/SETTINGS.md.
 */
import { QloradError } from "../../util/errors.ts";

export interface RedisStoreSettings {
  host: string;
  port: number;
  /** The logical database (the URL's path, `/N`); default 0. */
  db: number;
  /** For Redis 6+ ACL users; absent: the default user. */
  username?: string;
  password?: string;
  /** `rediss://`: TLS, with the host name checked against the certificate. */
  tls: boolean;
  /** PEM of a CA to trust (besides the system's) for TLS. */
  ca?: string;
  /** The URL without its password, for messages. */
  location: string;
}

/** What the settings are read from (tests pass their own). */
export interface StoreSources {
  /** The `--store` flag's value, if given. */
  flag?: string;
  env?: (name: string) => string | undefined;
  readTextFile?: (path: string) => Promise<string>;
}

/**
 * The Redis store's settings, or undefined for the local store (no flag, no QLORAD_STORE_URL).
 * Bad input is an invalid_argument error naming the flag or variable.
 */
export async function redisStoreSettings(
  sources: StoreSources,
): Promise<RedisStoreSettings | undefined> {
  const env = (name: string) => {
    const v = (sources.env ?? Deno.env.get)(name);
    return v === "" ? undefined : v;
  };
  const readFile = sources.readTextFile ?? Deno.readTextFile;
  const fromFlag = sources.flag !== undefined && sources.flag !== "";
  const raw = fromFlag ? sources.flag! : env("QLORAD_STORE_URL");
  const label = fromFlag ? "--store" : "QLORAD_STORE_URL";
  if (raw === undefined || raw === "local") return undefined;

  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw bad(`${label} must be a redis:// or rediss:// URL, not ${JSON.stringify(redact(raw))}`);
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    throw bad(`${label} must be a redis:// or rediss:// URL, not ${url.protocol}//...`);
  }
  if (fromFlag && url.password) {
    throw bad(
      "--store must not carry a password: a command line shows in `ps` to every user of the " +
        "machine. Give it in QLORAD_STORE_PASSWORD or QLORAD_STORE_PASSWORD_FILE, or the whole " +
        "URL in QLORAD_STORE_URL",
    );
  }
  if (!url.hostname) throw bad(`${label} names no host`);
  const port = url.port ? Number(url.port) : 6379;
  const dbText = url.pathname.replace(/^\//, "");
  const db = dbText === "" ? 0 : Number(dbText);
  if (!Number.isInteger(db) || db < 0 || !/^\d*$/.test(dbText)) {
    throw bad(`${label}: the database (the URL's path) must be a number, not ${dbText}`);
  }

  const passwords: { label: string; value: string }[] = [];
  if (url.password) {
    passwords.push({ label: label, value: decodeURIComponent(url.password) });
  }
  const envPassword = env("QLORAD_STORE_PASSWORD");
  if (envPassword !== undefined) {
    passwords.push({ label: "QLORAD_STORE_PASSWORD", value: envPassword });
  }
  const passwordFile = env("QLORAD_STORE_PASSWORD_FILE");
  if (passwordFile !== undefined) {
    let text: string;
    try {
      text = await readFile(passwordFile);
    } catch (err) {
      throw bad(`QLORAD_STORE_PASSWORD_FILE ${passwordFile}: cannot read it (${err})`);
    }
    // A file written by `echo` or a secret mount ends with a newline that is no part of it.
    const value = text.replace(/\r?\n$/, "");
    if (!value) throw bad(`QLORAD_STORE_PASSWORD_FILE ${passwordFile} is empty`);
    passwords.push({ label: "QLORAD_STORE_PASSWORD_FILE", value });
  }
  if (passwords.length > 1) {
    throw bad(
      `the store's password is given twice (${passwords.map((p) => p.label).join(" and ")}); ` +
        "give it once",
    );
  }

  const caFile = env("QLORAD_STORE_CA_FILE");
  let ca: string | undefined;
  if (caFile !== undefined) {
    if (url.protocol !== "rediss:") {
      throw bad("QLORAD_STORE_CA_FILE is for TLS: the store's URL must start with rediss://");
    }
    try {
      ca = await readFile(caFile);
    } catch (err) {
      throw bad(`QLORAD_STORE_CA_FILE ${caFile}: cannot read it (${err})`);
    }
  }

  const username = url.username ? decodeURIComponent(url.username) : undefined;
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const shownHost = host.includes(":") ? `[${host}]` : host;
  return {
    host,
    port,
    db,
    ...(username ? { username } : {}),
    ...(passwords.length ? { password: passwords[0].value } : {}),
    tls: url.protocol === "rediss:",
    ...(ca !== undefined ? { ca } : {}),
    location: `${url.protocol}//${username ? `${encodeURIComponent(username)}@` : ""}${shownHost}` +
      `:${port}/${db}`,
  };
}

function bad(message: string): QloradError {
  return new QloradError("invalid_argument", message);
}

/** A URL-ish string with anything between `:` and `@` of its authority blanked, for messages. */
function redact(raw: string): string {
  return raw.replace(/(\/\/[^/:@]*:)[^@/]*@/, "$1***@");
}
