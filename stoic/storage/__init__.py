"""Where batch data lives: the object store (a directory or S3) and the batch package
(a tar of images), both shared by the daemon, the backends and the function."""
