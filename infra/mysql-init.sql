-- Runs once when the MySQL volume is created: the Dagster instance gets its own database.
CREATE DATABASE IF NOT EXISTS dagster CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
GRANT ALL PRIVILEGES ON dagster.* TO 'aidoor'@'%';
