// Loaded with `node -r` before s3rver (tests/support/s3server.py).
//
// s3rver 3.7.1's filesystem store removes a key's parent directories once a DELETE leaves
// them empty. A PUT into the same directory at that moment has already made the directory
// and then opens its file in it: the open fails with ENOENT on a write stream that has no
// error handler, and the whole server process dies. Two backups running at once (one
// removing its lock while the other writes its own) hit that window.
//
// Real S3 has no directories, and s3rver lists objects from their files alone, so empty
// directories change nothing a client can see. This keeps them: DELETE removes only the
// object's own three files.
'use strict';
const fs = require('fs/promises');
const path = require('path');
const FilesystemStore = require(path.join(__dirname, 'node_modules', 's3rver', 'lib', 'stores', 'filesystem.js'));

FilesystemStore.prototype.deleteObject = async function deleteObject(bucket, key) {
  const files = ['object', 'object.md5', 'metadata.json'].map(kind => this.getResourcePath(bucket, key, kind));
  await Promise.all(files.map(file => fs.unlink(file).catch(err => {
    if (err.code !== 'ENOENT') throw err;
  })));
};
