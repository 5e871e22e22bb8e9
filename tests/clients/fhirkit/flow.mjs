// A full FHIR R4 flow driven through fhir-kit-client (npm), the way a JavaScript user
// would write it. Usage: node flow.mjs BASE_URL TAG
//
// Every step is recorded, never aborted on: the result is one JSON document on stdout,
// {"steps": {name: {ok, status, etag, location, contentType, body | error}}}, and
// tests/test_conformance_fhirkit.py asserts on it. A step that throws records the
// HTTP status and OperationOutcome the server answered, so a rejection shows up as
// a precise test failure instead of a crashed script.
import { Client } from 'fhir-kit-client';

const [base, tag] = process.argv.slice(2);
if (!base || !tag) {
  console.error('usage: node flow.mjs BASE_URL TAG');
  process.exit(2);
}

const client = new Client({ baseUrl: base });
const steps = {};
const SYS = `urn:fhirkit:${tag}`;

function meta(result) {
  const { response } = Client.httpFor(result);
  if (!response) return {};
  return {
    status: response.status,
    etag: response.headers.get('etag'),
    location: response.headers.get('location'),
    contentType: response.headers.get('content-type'),
    contentLocation: response.headers.get('content-location'),
  };
}

async function step(name, fn) {
  try {
    const body = await fn();
    steps[name] = { ok: true, ...meta(body ?? {}), body: body ?? null };
    return body;
  } catch (err) {
    steps[name] = {
      ok: false,
      status: err?.response?.status ?? null,
      error: err?.response?.data ?? String(err?.stack ?? err),
    };
    return undefined;
  }
}

const patient = (value, extra = {}) => ({
  resourceType: 'Patient',
  identifier: [{ system: SYS, value }],
  ...extra,
});

// --- capability -------------------------------------------------------------------------
await step('metadata', () => client.capabilityStatement());

// --- create / conditional create / read / vread -----------------------------------------
const created = await step('create', () =>
  client.create({ resourceType: 'Patient', body: patient('p1', { name: [{ family: 'Kit' }] }) }),
);
const pid = created?.id;

await step('conditionalCreateExisting', () =>
  client.create({
    resourceType: 'Patient',
    body: patient('p1', { gender: 'male' }),
    options: { headers: { 'If-None-Exist': `identifier=${SYS}|p1` } },
  }),
);
await step('conditionalCreateNew', () =>
  client.create({
    resourceType: 'Patient',
    body: patient('p2'),
    options: { headers: { 'If-None-Exist': `identifier=${SYS}|p2` } },
  }),
);
// Firely-style header with a "Type?" prefix (ecosystem.md §2.5): must still match p2.
await step('conditionalCreateTypePrefix', () =>
  client.create({
    resourceType: 'Patient',
    body: patient('p2'),
    options: { headers: { 'If-None-Exist': `Patient?identifier=${SYS}|p2` } },
  }),
);

await step('read', () => client.read({ resourceType: 'Patient', id: pid }));
await step('vread', () => client.vread({ resourceType: 'Patient', id: pid, version: '1' }));

// --- update with If-Match, stale If-Match, conditional update ---------------------------
await step('updateIfMatch', () =>
  client.update({
    resourceType: 'Patient',
    id: pid,
    body: patient('p1', { id: pid, name: [{ family: 'Kit' }], gender: 'female' }),
    options: { headers: { 'If-Match': 'W/"1"' } },
  }),
);
await step('updateStaleIfMatch', () =>
  client.update({
    resourceType: 'Patient',
    id: pid,
    body: patient('p1', { id: pid, gender: 'other' }),
    options: { headers: { 'If-Match': 'W/"1"' } },
  }),
);
await step('conditionalUpdate', () =>
  client.update({
    resourceType: 'Patient',
    searchParams: { identifier: `${SYS}|p2` },
    body: patient('p2', { active: true }),
  }),
);

// --- JSON Patch (application/json-patch+json) -------------------------------------------
await step('patch', () =>
  client.patch({
    resourceType: 'Patient',
    id: pid,
    jsonPatch: [
      { op: 'add', path: '/birthDate', value: '1980-02-03' },
      { op: 'replace', path: '/gender', value: 'unknown' },
    ],
  }),
);
await step('patchFailedTest', () =>
  client.patch({
    resourceType: 'Patient',
    id: pid,
    jsonPatch: [{ op: 'test', path: '/gender', value: 'male' }],
  }),
);

// --- search with paging (GET and POST _search), following next links verbatim ----------
const pageSys = `${SYS}:page`;
for (let i = 0; i < 7; i++) {
  await step(`pageCreate${i}`, () =>
    client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', identifier: [{ system: pageSys, value: `v${i}` }] } }),
  );
}

async function collect(name, first) {
  const pages = [];
  let bundle = await step(`${name}0`, first);
  while (bundle && pages.length < 20) {
    pages.push({
      total: bundle.total ?? null,
      ids: (bundle.entry ?? []).filter((e) => e.search?.mode !== 'include').map((e) => e.resource.id),
      next: bundle.link?.find((l) => l.relation === 'next')?.url ?? null,
    });
    if (!pages.at(-1).next) break;
    const page = bundle;
    bundle = await step(`${name}${pages.length}`, () => client.nextPage({ bundle: page }));
  }
  steps[name] = { ok: true, pages };
}
await collect('searchGet', () =>
  client.search({ resourceType: 'Patient', searchParams: { identifier: `${pageSys}|`, _count: 3, _sort: '_id' } }),
);
await collect('searchPost', () =>
  client.search({
    resourceType: 'Patient',
    searchParams: { identifier: `${pageSys}|`, _count: 3 },
    options: { postSearch: true },
  }),
);
// an array value is sent as a repeated parameter, which means AND: no Patient has both
// identifiers (OR would find 2, dropping the repeat would find 1); the comma form is OR
await step('searchRepeated', () =>
  client.search({ resourceType: 'Patient', searchParams: { identifier: [`${pageSys}|v1`, `${pageSys}|v2`] } }),
);
await step('searchComma', () =>
  client.search({ resourceType: 'Patient', searchParams: { identifier: `${pageSys}|v1,${pageSys}|v2` } }),
);

// --- transaction (POST [base]/) with urn:uuid references and ifNoneExist ---------------
const txPatient = 'urn:uuid:6b1c3a52-6d4e-4c8f-9a51-0f7f3c3e9a10';
await step('transaction', () =>
  client.transaction({
    body: {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: txPatient,
          resource: patient('tx1'),
          request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${SYS}|tx1` },
        },
        {
          resource: {
            resourceType: 'Observation',
            status: 'final',
            code: { coding: [{ system: 'http://loinc.org', code: '1988-5' }] },
            subject: { reference: txPatient },
            effectiveDateTime: '2024-03-01',
            valueQuantity: { value: 4.2, unit: 'mg/L', system: 'http://unitsofmeasure.org', code: 'mg/L' },
          },
          request: { method: 'POST', url: 'Observation' },
        },
        {
          resource: patient('p1', { id: pid, gender: 'female', birthDate: '1980-02-03' }),
          request: { method: 'PUT', url: `Patient/${pid}` },
        },
      ],
    },
  }),
);
// the same transaction again: ifNoneExist now matches, nothing new is created for it
await step('transactionReplay', () =>
  client.transaction({
    body: {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: txPatient,
          resource: patient('tx1'),
          request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${SYS}|tx1` },
        },
      ],
    },
  }),
);
await step('batch', () =>
  client.batch({
    body: {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Patient/${pid}` } },
        { request: { method: 'GET', url: 'Patient/does-not-exist-fhirkit' } },
      ],
    },
  }),
);
await step('searchTxObservation', () =>
  client.search({ resourceType: 'Observation', searchParams: { 'subject:Patient.identifier': `${SYS}|tx1` } }),
);

// --- Bulk Data $export (operation GET + Prefer: respond-async), polled to the manifest --
const kick = await step('exportKickoff', () =>
  client.operation({
    name: '$export',
    method: 'GET',
    input: { _type: 'Patient', _typeFilter: `Patient?identifier=${SYS}|` },
    options: { headers: { Prefer: 'respond-async' } },
  }),
);
const statusUrl = steps.exportKickoff?.contentLocation;
if (kick && statusUrl) {
  let manifest;
  for (let i = 0; i < 600 && !manifest; i++) {
    const answer = await step('exportStatus', () => client.request(statusUrl));
    if (!answer) break;
    if (steps.exportStatus.status === 200) manifest = answer;
    else await new Promise((done) => setTimeout(done, 100));
  }
  if (manifest) {
    const ids = [];
    for (const item of manifest.output ?? []) {
      const text = await (await fetch(item.url, { headers: { accept: 'application/fhir+ndjson' } })).text();
      for (const line of text.split('\n').filter(Boolean)) ids.push(JSON.parse(line).id);
    }
    steps.exportFiles = { ok: true, ids };
    await step('exportDelete', () => client.request(statusUrl, { method: 'DELETE' }));
  }
}

// --- history, delete --------------------------------------------------------------------
await step('historyBeforeDelete', () => client.history({ resourceType: 'Patient', id: pid }));
await step('delete', () => client.delete({ resourceType: 'Patient', id: pid }));
await step('readDeleted', () => client.read({ resourceType: 'Patient', id: pid }));
await step('historyAfterDelete', () => client.history({ resourceType: 'Patient', id: pid }));
await step('vreadOld', () => client.vread({ resourceType: 'Patient', id: pid, version: '2' }));
await step('typeHistory', () => client.history({ resourceType: 'Patient', options: { headers: {} } }));

process.stdout.write(JSON.stringify({ pid, steps }));
