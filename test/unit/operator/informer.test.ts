import { describe, expect, it } from '@jest/globals';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { KubeClient, WatchEventType } from '../../../operator/kube/client.js';
import { Informer } from '../../../operator/kube/informer.js';
import { CHILD_TYPES } from '../../../operator/kube/resources.js';

function child(name: string, owner: string | undefined, resourceVersion = '1'): KubernetesObject {
  return {
    metadata: {
      name,
      namespace: 'ns',
      resourceVersion,
      ...(owner
        ? {
            ownerReferences: [
              {
                apiVersion: 'aimesh.io/v1alpha1',
                kind: 'AiService',
                name: owner,
                uid: owner,
                controller: true,
              },
            ],
          }
        : {}),
    },
  };
}

/** A client whose list answers `items` and whose watch hands its event callback to the test. */
function fakeClient(items: KubernetesObject[]) {
  let send: ((type: WatchEventType, object: KubernetesObject) => void) | undefined;
  const client = {
    list: (_t: unknown, _q: unknown, each: (item: KubernetesObject) => KubernetesObject) =>
      Promise.resolve({ resourceVersion: '1', items: items.map(each) }),
    watch: (_t: unknown, _q: unknown, onEvent: (type: WatchEventType, object: KubernetesObject) => void) => {
      send = onEvent;
      return Promise.resolve({ abort: () => undefined });
    },
  } as unknown as KubeClient;
  return { client, send: (type: WatchEventType, object: KubernetesObject) => send?.(type, object) };
}

describe('Informer', () => {
  it("finds an owner's objects by its uid, following adds, owner changes and deletes", async () => {
    const { client, send } = fakeClient([
      child('a', 'owner-1'),
      child('b', 'owner-1'),
      child('c', undefined),
    ]);
    const informer = new Informer(client, CHILD_TYPES[0]!, () => undefined);
    await informer.start();
    const names = (uid: string) =>
      informer
        .ownedBy(uid)
        .map((o) => o.metadata?.name)
        .sort();
    expect(names('owner-1')).toEqual(['a', 'b']);

    send('ADDED', child('d', 'owner-2', '2'));
    send('MODIFIED', child('b', 'owner-2', '3'));
    send('DELETED', child('a', 'owner-1', '4'));
    expect(names('owner-1')).toEqual([]);
    expect(names('owner-2')).toEqual(['b', 'd']);
    informer.stop();
  });
});
