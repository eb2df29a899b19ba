// mevbackup key generate: an age identity and an Ed25519 signing key, as files.
#include <sys/stat.h>

#include "cli.hpp"

namespace cli {

Action setup_key_generate(CLI::App* app) {
  struct Opts {
    OutputOptions out;
    std::string dir, identity, signing_key, verify_key;
    bool no_signing = false;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--dir", o->dir,
                  "write identity.txt, signing-key.pem and verify-key.pem into DIR (created 0700 if missing)")
      ->type_name("DIR");
  app->add_option("--identity", o->identity, "where to write the age identity (mode 600)")->type_name("FILE");
  app->add_option("--signing-key", o->signing_key, "where to write the Ed25519 signing key (PEM, mode 600)")
      ->type_name("FILE");
  app->add_option("--verify-key", o->verify_key, "where to write its public half (PEM; default SIGNING-KEY.pub)")
      ->type_name("FILE");
  app->add_flag("--no-signing-key", o->no_signing, "only the age identity");
  add_output_options(app, o->out);
  app->footer(
      "The identity stays on the restore host; the backup host gets its public key (--recipient age1...),\n"
      "the signing key (--signing-key) and nothing that decrypts. Restores and verify get --identity and\n"
      "--verify-key. No file is ever replaced.");
  return [o] {
    apply_output(o->out);
    if (o->dir.empty() && o->identity.empty() && o->signing_key.empty())
      throw UsageError{"give --dir DIR, or --identity FILE (and --signing-key FILE)"};
    if (!o->dir.empty()) {
      if (::mkdir(o->dir.c_str(), 0700) != 0 && errno != EEXIST)
        fail_with(MEVB_ERR_IO, "cannot create " + o->dir + ": " + std::strerror(errno));
      if (o->identity.empty()) o->identity = o->dir + "/identity.txt";
      if (o->signing_key.empty() && !o->no_signing) o->signing_key = o->dir + "/signing-key.pem";
    }
    if (o->no_signing) o->signing_key.clear();
    if (!o->signing_key.empty() && o->verify_key.empty())
      o->verify_key = !o->dir.empty() ? o->dir + "/verify-key.pem" : o->signing_key + ".pub";
    nlohmann::json report = nlohmann::json::object();
    if (!o->identity.empty()) {
      char recipient[MEVB_AGE_RECIPIENT_SIZE];
      if (mevb_key_generate_identity(o->identity.c_str(), recipient, sizeof recipient) != MEVB_OK) fail();
      report["identity_file"] = o->identity;
      report["recipient"] = recipient;
    }
    if (!o->signing_key.empty()) {
      char key_id[MEVB_KEY_ID_SIZE];
      if (mevb_key_generate_signing(o->signing_key.c_str(), o->verify_key.c_str(), key_id, sizeof key_id) != MEVB_OK)
        fail();
      report["signing_key_file"] = o->signing_key;
      report["verify_key_file"] = o->verify_key;
      report["key_id"] = key_id;
    }
    if (o->out.json) {
      std::printf("%s\n", report.dump(2).c_str());
    } else if (!o->out.quiet) {
      if (report.contains("recipient"))
        std::printf("identity %s\nrecipient %s\n", o->identity.c_str(), report["recipient"].get<std::string>().c_str());
      if (report.contains("key_id"))
        std::printf("signing key %s\nverify key %s (key id %s)\n", o->signing_key.c_str(), o->verify_key.c_str(),
                    report["key_id"].get<std::string>().c_str());
    }
    return kExitOk;
  };
}

Action setup_rekey(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string backup, kind, source;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("-b,--backup", o->backup, "backup id, or latest")->required()->type_name("ID|latest");
  app->add_option("-k,--kind", o->kind, "with latest: of this kind")->type_name("KIND");
  app->add_option("--source", o->source, "with latest: of this source")->type_name("NAME");
  add_output_options(app, o->out);
  app->footer(
      "Re-encrypts a backup to new recipients: --identity opens it, --recipient/--recipients-file are the\n"
      "new ones. Only the age headers are rewritten; the rekeyed backup gets a new id (<id>_1) and is\n"
      "complete before the old one is removed. Its manifest is signed anew with --signing-key.");
  return [o] {
    apply_output(o->out);
    mevb_repo* repo = open_repo(o->repo);
    mevb_backup* b = nullptr;
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    if (mevb_repo_rekey(repo, o->backup.c_str(), c(o->kind), c(o->source), &b) != MEVB_OK) fail();
    if (o->out.json) {
      std::fputs(mevb_backup_manifest_json(b), stdout);
    } else if (!o->out.quiet) {
      std::printf("rekeyed %s as %s: %s\n", o->backup.c_str(), mevb_backup_id(b), mevb_backup_path(b));
    }
    mevb_backup_free(b);
    mevb_repo_free(repo);
    return kExitOk;
  };
}

}  // namespace cli
