#include <mevbackup.h>
#include <stdio.h>

int main(void) {
  mevb_repo *repo = NULL;
  if (mevb_version_number() != MEVB_VERSION_NUMBER) return 1;
  if (mevb_repo_open(&repo, "/nonexistent/consumer", NULL) != MEVB_OK) return 1;
  mevb_repo_free(repo);
  printf("consumer linked against libmevbackup %s\n", mevb_version());
  return 0;
}
