// A real OAuth 2.1 authorization server for the tests: the certified `oidc-provider` (installed
// by `make oidc-provider` into build/oidc-provider/), configured as an MCP gateway needs it.
//
//   node tests/oidc_server.mjs <oidc-provider module dir> <config.json>
//
// config.json: {"port": 0, "clients": [{"id", "secret", "scope"}], "scopes": [...],
//               "ttl": seconds, "tls": {"cert": PEM file, "key": PEM file} (optional: HTTPS)}
// Prints one JSON line {"issuer": ...} on stdout once it listens on 127.0.0.1.
//
// - client credentials grant, resource indicators (RFC 8707): the access token is a JWT (RS256)
//   whose `aud` is the requested `resource`; any resource the test names is accepted.
// - POST /admin/rotate: a new signing key signs from now on; the JWKS keeps the old one too
//   (as an IdP does during a rotation), so Envoy must refetch the JWKS to accept new tokens.
// - POST /admin/jwks-delay {"ms": N}: the JWKS answers N ms late (a slow IdP).
// - POST /admin/sign {"claims": {...}, "header": {...}}: signs any claims with the current key,
//   so the tests can make expired, wrong-issuer, wrong-audience tokens the IdP's key did sign.
// The provider object is rebuilt on rotation (its keys are fixed at construction); the HTTP
// server stays, so the issuer URL does not change.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [moduleDir, configFile] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
const { default: Provider } = await import(pathToFileURL(path.join(moduleDir, 'lib', 'index.js')).href);

function newKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
}

// Newest first: oidc-provider signs with the first key of a type.
let keys = [newKey()];
let issuer = '';
// POST /admin/jwks-delay {"ms": N}: the JWKS answers N ms late (a slow IdP).
let jwksDelay = 0;
let provider = null;

function build() {
  const scopes = config.scopes ?? [];
  const p = new Provider(issuer, {
    clients: (config.clients ?? []).map((c) => ({
      client_id: c.id,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: c.scope ?? scopes.join(' '),
    })),
    jwks: { keys },
    scopes,
    ttl: { ClientCredentials: config.ttl ?? 600 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => ({
          scope: scopes.join(' '),
          audience: resource,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
  });
  p.proxy = false;
  return p;
}

function b64(data) {
  return Buffer.from(JSON.stringify(data)).toString('base64url');
}

function sign(claims, header) {
  const key = keys[0];
  const head = { alg: 'RS256', typ: 'at+jwt', kid: key.kid, ...header };
  const input = `${b64(head)}.${b64(claims)}`;
  const privateKey = crypto.createPrivateKey({ key, format: 'jwk' });
  const signature = crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url');
  return `${input}.${signature}`;
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function admin(req, res) {
  let text = '';
  for await (const chunk of req) text += chunk;
  if (req.url === '/admin/rotate') {
    keys = [newKey(), ...keys].slice(0, 3);
    provider = build();
    return reply(res, 200, { kid: keys[0].kid });
  }
  if (req.url === '/admin/jwks-delay') {
    jwksDelay = JSON.parse(text || '{}').ms ?? 0;
    return reply(res, 200, { ms: jwksDelay });
  }
  if (req.url === '/admin/sign') {
    const { claims, header } = JSON.parse(text || '{}');
    return reply(res, 200, { token: sign(claims ?? {}, header ?? {}) });
  }
  return reply(res, 404, { error: 'unknown admin route' });
}

function handle(req, res) {
  if (req.method === 'POST' && req.url.startsWith('/admin/')) {
    admin(req, res).catch((error) => reply(res, 500, { error: String(error) }));
    return;
  }
  if (jwksDelay > 0 && req.url === '/jwks') {
    setTimeout(() => provider.callback()(req, res), jwksDelay);
    return;
  }
  provider.callback()(req, res);
}

const server = config.tls
  ? https.createServer({ cert: fs.readFileSync(config.tls.cert), key: fs.readFileSync(config.tls.key) }, handle)
  : http.createServer(handle);

server.listen(config.port ?? 0, '127.0.0.1', () => {
  issuer = `${config.tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}`;
  provider = build();
  process.stdout.write(`${JSON.stringify({ issuer, kid: keys[0].kid })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
